-- wrk script: each request carries the next API key of a file (round-robin), and the run ends with one
-- JSON line on stdout that bench/wrk.py reads (requests, duration, latency percentiles, errors).
--   wrk -s bench/lua/keys.lua URL -- KEYS_FILE [METHOD] [BODY_FILE|-] [DELAY_MS]
-- KEYS_FILE "-" sends no key (unauthenticated routes); DELAY_MS paces each connection (a probe, not a load).
local keys = {}
local counter = 0
local method = "GET"
local body = nil
local headers = {}
local pause = 0

function init(args)
  if args[1] and args[1] ~= "-" then
    for line in io.lines(args[1]) do
      if #line > 0 then keys[#keys + 1] = line end
    end
  end
  method = args[2] or "GET"
  pause = tonumber(args[4] or "0")
  if args[3] and args[3] ~= "-" then
    local fh = io.open(args[3], "rb")
    body = fh:read("*a")
    fh:close()
    headers["Content-Type"] = "application/json"
  end
  -- Threads start at different keys so that two threads do not walk the list in step.
  counter = math.random(0, 1000)
end

function request()
  counter = counter + 1
  if #keys > 0 then
    headers["X-API-Key"] = keys[(counter % #keys) + 1]
  end
  return wrk.format(method, nil, headers, body)
end

function delay()
  return pause
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nBENCH {"requests":%d,"duration_us":%d,"bytes":%d,"non2xx":%d,"connect_errors":%d,"read_errors":%d,'
    .. '"write_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
