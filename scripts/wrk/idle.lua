-- Fills a node with idle processes: one GET on each of IDLE_PROCESSES
-- distinct lists (default 200,000), then stops. Run with -t1, so the count
-- is the thread's. Each list's process starts, answers, and, once the
-- instance slots are full or it has been idle for --hibernate-after,
-- hibernates.
local count = tonumber(os.getenv("IDLE_PROCESSES") or "200000")
local sent = 0
local answered = 0

request = function()
  sent = sent + 1
  return wrk.format("GET", "/entries?list=idle-" .. sent .. "&date=2024-04-01")
end

response = function(status)
  answered = answered + 1
  if answered >= count then
    wrk.thread:stop()
  end
end
