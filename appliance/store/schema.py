"""Versioned migrations; ``PRAGMA user_version`` says how many have been applied."""

MIGRATIONS: list[str] = [
    # 1: the spine and scans
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    INSERT INTO meta (key, value) VALUES ('epoch', '0');

    CREATE TABLE tenants (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL
    );

    CREATE TABLE target_policy (
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        kind TEXT NOT NULL CHECK (kind IN ('allow', 'deny')),
        entry TEXT NOT NULL,
        PRIMARY KEY (tenant_id, kind, entry)
    );

    CREATE TABLE api_keys (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        key_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        name TEXT NOT NULL,
        description TEXT,
        scopes TEXT NOT NULL,
        allowed_scan_types TEXT,
        allowed_ips TEXT,
        rate_minute INTEGER NOT NULL,
        rate_hour INTEGER NOT NULL,
        rate_day INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('active', 'revoked', 'suspended')),
        expires_at REAL,
        last_used_at REAL,
        last_used_ip TEXT,
        created_at REAL NOT NULL,
        rotated_from_id TEXT,
        grace_expires_at REAL
    );
    CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at);

    CREATE TABLE rate_counters (
        subject TEXT NOT NULL,
        window TEXT NOT NULL,
        window_start INTEGER NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (subject, window)
    );

    CREATE TABLE api_calls (
        id INTEGER PRIMARY KEY,
        tenant_id TEXT,
        api_key_id TEXT,
        method TEXT NOT NULL,
        path TEXT NOT NULL,
        status INTEGER NOT NULL,
        duration_ms REAL NOT NULL,
        ip TEXT,
        request_id TEXT,
        created_at REAL NOT NULL
    );
    CREATE INDEX api_calls_tenant_time ON api_calls (tenant_id, created_at);

    CREATE TABLE audit_events (
        id INTEGER PRIMARY KEY,
        tenant_id TEXT,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        resource_type TEXT NOT NULL,
        resource_id TEXT,
        details TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL
    );
    CREATE INDEX audit_events_tenant_time ON audit_events (tenant_id, created_at);

    CREATE TABLE scans (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        api_key_id TEXT,
        scan_type TEXT NOT NULL,
        name TEXT,
        target TEXT NOT NULL,
        target_type TEXT NOT NULL,
        status TEXT NOT NULL
            CHECK (status IN ('queued', 'running', 'completed', 'failed', 'cancelled')),
        priority TEXT NOT NULL,
        progress INTEGER NOT NULL DEFAULT 0,
        options TEXT NOT NULL DEFAULT '{}',
        config TEXT NOT NULL DEFAULT '{}',
        tags TEXT NOT NULL DEFAULT '[]',
        timeout INTEGER NOT NULL,
        asset_id TEXT,
        callback_url TEXT,
        template_id TEXT,
        created_at REAL NOT NULL,
        queued_at REAL NOT NULL,
        started_at REAL,
        completed_at REAL,
        error_code TEXT,
        error_message TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        worker TEXT,
        heartbeat_at REAL,
        pid INTEGER,
        workdir TEXT,
        total INTEGER NOT NULL DEFAULT 0,
        critical INTEGER NOT NULL DEFAULT 0,
        high INTEGER NOT NULL DEFAULT 0,
        medium INTEGER NOT NULL DEFAULT 0,
        low INTEGER NOT NULL DEFAULT 0,
        info INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX scans_tenant_created ON scans (tenant_id, created_at DESC);
    CREATE INDEX scans_active ON scans (status) WHERE status IN ('queued', 'running');

    CREATE TABLE findings (
        id TEXT PRIMARY KEY,
        scan_id TEXT NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        severity_rank INTEGER NOT NULL,
        severity TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        body TEXT NOT NULL,
        UNIQUE (scan_id, fingerprint)
    );
    CREATE INDEX findings_scan_order ON findings (scan_id, severity_rank, seq);
    """,
    # 2: the scan core: leases, routing to zones, the scan event outbox, remote workers
    """
    ALTER TABLE scans ADD COLUMN lease_id TEXT;
    ALTER TABLE scans ADD COLUMN lease_owner TEXT;
    ALTER TABLE scans ADD COLUMN lease_expires_at REAL;
    ALTER TABLE scans ADD COLUMN zone TEXT NOT NULL DEFAULT '';
    ALTER TABLE scans ADD COLUMN vetted TEXT NOT NULL DEFAULT '[]';
    CREATE INDEX scans_tenant_running ON scans (tenant_id) WHERE status = 'running';

    CREATE TABLE scan_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        scan_id TEXT NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
        tenant_id TEXT NOT NULL,
        event TEXT NOT NULL,
        status TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL
    );
    CREATE INDEX scan_events_scan ON scan_events (scan_id, id);

    CREATE TABLE workers (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        token_hash TEXT NOT NULL UNIQUE,
        zones TEXT NOT NULL DEFAULT '[]',
        created_at REAL NOT NULL,
        revoked_at REAL,
        last_seen_at REAL,
        version TEXT,
        engines TEXT NOT NULL DEFAULT '[]',
        running INTEGER NOT NULL DEFAULT 0
    );
    """,
    # 3: results filters (GET /scans/:id/results?ruleId=&host=&port=) as index lookups within a scan
    """
    CREATE INDEX findings_rule ON findings (scan_id, json_extract(body, '$.ruleId'));
    CREATE INDEX findings_host ON findings (scan_id, json_extract(body, '$.host'));
    CREATE INDEX findings_ip ON findings (scan_id, json_extract(body, '$.ip'));
    CREATE INDEX findings_port ON findings (scan_id, json_extract(body, '$.port'));
    """,
    # 4: keys limited to scan priorities (fairness between tenants)
    """
    ALTER TABLE api_keys ADD COLUMN allowed_priorities TEXT;
    """,
]
