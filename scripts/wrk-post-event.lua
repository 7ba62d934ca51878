-- wrk script: Pushwoosh postEvent against `herald loadgen -serve`, each
-- request for one of 100,000 WhatsApp users, like `herald loadgen -kind
-- post-event`. Usage (see docs/BENCHMARKS.md):
--   bin/herald loadgen -serve -listen 127.0.0.1:18080 -duration 60s &
--   TOKEN=loadgen-token-0123456789 wrk -t1 -c64 -d10s -s scripts/wrk-post-event.lua http://127.0.0.1:18080
local token = os.getenv("TOKEN") or "loadgen-token-0123456789"
local app = os.getenv("APP") or "demo"
local users = tonumber(os.getenv("USERS") or "100000")
local n = 0

function setup(thread)
  thread:set("id", math.random(1, 1000000))
end

function request()
  n = n + 1
  local body = string.format(
    '{"request":{"application":"%s","hwid":"whatsapp:+9198%08d","event":"OrderPlaced","attributes":{"cuisine":"asian","amount":%d,"currency":"USD"}}}',
    app, (n * 7919 + (id or 0)) % users, n % 60)
  return wrk.format("POST", "/json/1.3/postEvent",
    {["Content-Type"] = "application/json", ["Authorization"] = "Token " .. token}, body)
end

function done(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("requests %d, non-2xx %d, p50 %.2fms p99 %.2fms p99.9 %.2fms\n",
    summary.requests, non2xx, latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000))
end
