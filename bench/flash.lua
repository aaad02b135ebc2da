-- wrk script for the flash crowd: each request takes the next path of the
-- list given after `--` (e.g. `-- /index.html /style.css /img/logo.png`),
-- like browsers loading a page; prints the same summary line as wrk-report.lua.
local reqs = {}
local i = 0

init = function(args)
  for _, p in ipairs(args) do
    reqs[#reqs + 1] = wrk.format(nil, p)
  end
end

request = function()
  if #reqs == 0 then
    return wrk.format(nil, wrk.path)
  end
  i = i % #reqs + 1
  return reqs[i]
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean))
end
