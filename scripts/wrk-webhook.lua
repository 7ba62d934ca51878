-- wrk script: signed Meta status webhooks against `herald loadgen -serve`,
-- replaying requests signed beforehand (wrk has no HMAC). Usage (see
-- docs/BENCHMARKS.md):
--   bin/herald loadgen -kind webhook -dump /tmp/webhooks.txt -dump-count 200000
--   bin/herald loadgen -serve -listen 127.0.0.1:18080 -duration 60s &
--   REQUESTS=/tmp/webhooks.txt wrk -t1 -c128 -d10s -s scripts/wrk-webhook.lua http://127.0.0.1:18080
local file = os.getenv("REQUESTS") or "/tmp/webhooks.txt"
local reqs = {}
local i = 0

function init(args)
  for line in io.lines(file) do
    local sig, body = line:match("^([^\t]+)\t(.*)$")
    reqs[#reqs + 1] = wrk.format("POST", "/whatsapp/webhooks",
      {["Content-Type"] = "application/json", ["X-Hub-Signature-256"] = sig}, body)
  end
  if #reqs == 0 then error("no requests in " .. file) end
end

function request()
  i = i % #reqs + 1
  return reqs[i]
end

function done(summary, latency, requests)
  io.write(string.format("requests %d, non-2xx %d, p50 %.2fms p99 %.2fms p99.9 %.2fms\n",
    summary.requests, summary.errors.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000))
end
