-- wrk script of bench/lookup.py: GET /v1/holders/{id}/licenses for rotating holder IDs.
--
--   wrk -t2 -c32 -d30s --latency -s bench/lookup.lua http://127.0.0.1:PORT/ \
--       -- HOLDERS_FILE [TOKEN] [MATTER] [THREADS]
--
-- HOLDERS_FILE has one holder ID a line; each thread starts at its own place in it. With a
-- TOKEN every request carries "Authorization: Bearer TOKEN"; every request carries a case id
-- "X-Case-Id: bench-<n>" unique in the run. done() prints one line "WRK_JSON {...}" for the
-- Python side: requests, duration, p50/p99 (microseconds), non-2xx responses, socket errors.

local thread_count = 0

function setup(thread)
  thread:set("thread_id", thread_count)
  thread_count = thread_count + 1
end

function init(args)
  holders = {}
  for line in io.lines(args[1]) do
    if #line > 0 then holders[#holders + 1] = line end
  end
  local token = args[2] or ""
  matter = args[3] or "11440600MB20125487-XSE-001"
  threads = tonumber(args[4] or "2")
  headers = {}
  if token ~= "" then headers["Authorization"] = "Bearer " .. token end
  position = (thread_id * math.floor(#holders / threads)) % #holders
  case = thread_id
end

function request()
  position = position % #holders + 1
  case = case + threads
  headers["X-Case-Id"] = "bench-" .. case
  return wrk.format("GET", "/v1/holders/" .. holders[position] .. "/licenses?matter=" .. matter,
                    headers)
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"mean_us": %.1f, "max_us": %d, "non_2xx": %d, "socket_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency.mean, latency.max, errors.status,
    errors.connect + errors.read + errors.write + errors.timeout))
end
