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
    # 5: events: a hash-chained audit trail, templates, webhooks and their deliveries, quotas,
    # callback secrets. Audit rows written before this migration are chained here, in id order.
    """
    ALTER TABLE audit_events ADD COLUMN prev_hash TEXT;
    ALTER TABLE audit_events ADD COLUMN hash TEXT;
    CREATE INDEX audit_events_time ON audit_events (created_at);
    CREATE TEMP TABLE audit_chain AS
        WITH RECURSIVE chain(id, prev, hash) AS (
            SELECT a.id, '0000000000000000000000000000000000000000000000000000000000000000',
                   cix_audit_hash('0000000000000000000000000000000000000000000000000000000000000000',
                                  a.id, a.tenant_id, a.actor, a.action, a.resource_type, a.resource_id,
                                  a.details, a.created_at)
            FROM audit_events a WHERE a.id = (SELECT min(id) FROM audit_events)
            UNION ALL
            SELECT a.id, c.hash, cix_audit_hash(c.hash, a.id, a.tenant_id, a.actor, a.action, a.resource_type,
                                                a.resource_id, a.details, a.created_at)
            FROM chain c JOIN audit_events a ON a.id = (SELECT min(id) FROM audit_events WHERE id > c.id)
        )
        SELECT id, prev, hash FROM chain;
    UPDATE audit_events SET prev_hash = audit_chain.prev, hash = audit_chain.hash
        FROM audit_chain WHERE audit_chain.id = audit_events.id;
    INSERT INTO meta (key, value)
        SELECT 'audit_head', coalesce((SELECT id || ':' || hash FROM audit_events ORDER BY id DESC LIMIT 1), '');
    DROP TABLE temp.audit_chain;
    INSERT INTO meta (key, value) SELECT 'events_cursor', coalesce((SELECT max(id) FROM scan_events), 0);

    CREATE INDEX api_calls_time ON api_calls (created_at);

    ALTER TABLE tenants ADD COLUMN scan_quota INTEGER;
    ALTER TABLE tenants ADD COLUMN callback_secret TEXT;
    ALTER TABLE tenants ADD COLUMN callback_secret_old TEXT;
    ALTER TABLE tenants ADD COLUMN callback_secret_old_until REAL;

    CREATE TABLE scan_templates (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        description TEXT,
        scan_type TEXT NOT NULL,
        target_type TEXT,
        priority TEXT NOT NULL,
        options TEXT NOT NULL DEFAULT '{}',
        config TEXT NOT NULL DEFAULT '{}',
        tags TEXT NOT NULL DEFAULT '[]',
        timeout INTEGER,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX scan_templates_tenant ON scan_templates (tenant_id, created_at);

    CREATE TABLE webhooks (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        url TEXT NOT NULL,
        events TEXT NOT NULL,
        is_active INTEGER NOT NULL DEFAULT 1,
        secret TEXT NOT NULL,
        secret_old TEXT,
        secret_old_until REAL,
        consecutive_failures INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX webhooks_tenant ON webhooks (tenant_id, created_at);

    CREATE TABLE webhook_deliveries (
        id TEXT PRIMARY KEY,
        tenant_id TEXT NOT NULL,
        webhook_id TEXT REFERENCES webhooks(id) ON DELETE CASCADE,
        callback_url TEXT,
        event_id INTEGER,
        scan_id TEXT,
        event TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
        attempt INTEGER NOT NULL DEFAULT 0,
        round_start INTEGER NOT NULL DEFAULT 0,
        retries INTEGER NOT NULL DEFAULT 1,
        next_attempt_at REAL,
        response_status INTEGER,
        response_excerpt TEXT,
        duration_ms INTEGER,
        error TEXT,
        created_at REAL NOT NULL,
        delivered_at REAL,
        CHECK ((webhook_id IS NULL) != (callback_url IS NULL))
    );
    CREATE UNIQUE INDEX webhook_deliveries_event ON webhook_deliveries (event_id, webhook_id)
        WHERE event_id IS NOT NULL AND webhook_id IS NOT NULL;
    CREATE UNIQUE INDEX webhook_deliveries_callback ON webhook_deliveries (event_id)
        WHERE event_id IS NOT NULL AND webhook_id IS NULL;
    CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
    CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook_id, created_at);
    """,
    # 6: theHarvester's scan type is `harvester` (the contract's name), never `theharvester`
    """
    UPDATE scans SET scan_type = 'harvester' WHERE scan_type = 'theharvester';
    UPDATE api_keys SET allowed_scan_types = (
        SELECT json_group_array(name) FROM (
            SELECT CASE WHEN value = 'theharvester' THEN 'harvester' ELSE value END AS name, MIN(key) AS first
            FROM json_each(api_keys.allowed_scan_types) GROUP BY name ORDER BY first))
    WHERE allowed_scan_types IS NOT NULL
      AND EXISTS (SELECT 1 FROM json_each(api_keys.allowed_scan_types) WHERE value = 'theharvester');
    """,
    # 7: findings without per-finding random index upkeep. No unique (scan_id, fingerprint) index (the
    # writer drops repeated fingerprints from what it remembers of the scan: appliance.scanning.batches),
    # no id key (no query looks a finding up by id), and the results filters served from one covering
    # index in results order instead of four expression indexes. A trigger counts each scan's deleted
    # findings, so that the writer knows when what it remembers is no longer what the table holds.
    """
    CREATE TABLE findings_v7 (
        scan_id TEXT NOT NULL REFERENCES scans(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        severity_rank INTEGER NOT NULL,
        severity TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        rule_id,
        host,
        ip,
        port,
        body TEXT NOT NULL
    );
    INSERT INTO findings_v7 (scan_id, seq, severity_rank, severity, fingerprint, rule_id, host, ip, port, body)
        SELECT scan_id, seq, severity_rank, severity, fingerprint, json_extract(body, '$.ruleId'),
               json_extract(body, '$.host'), json_extract(body, '$.ip'), json_extract(body, '$.port'), body
        FROM findings ORDER BY rowid;
    DROP TABLE findings;
    ALTER TABLE findings_v7 RENAME TO findings;
    CREATE INDEX findings_scan ON findings (scan_id, severity_rank, seq, fingerprint, rule_id, host, ip, port);
    ALTER TABLE scans ADD COLUMN findings_deleted INTEGER NOT NULL DEFAULT 0;
    CREATE TRIGGER findings_deleted AFTER DELETE ON findings BEGIN
        UPDATE scans SET findings_deleted = findings_deleted + 1 WHERE id = old.scan_id;
    END;
    """,
]
