-- The book's mix: 80% GET /entries, 20% POST /add_entry, over $LISTS lists
-- (list1..listN; 1,000 unless the environment says otherwise).
local lists = tonumber(os.getenv("LISTS") or "1000")
math.randomseed(os.time())
counter = 0
request = function()
  local list = "list" .. math.random(1, lists)
  if math.random() < 0.8 then
    return wrk.format("GET", "/entries?list=" .. list .. "&date=2024-01-01")
  end
  counter = counter + 1
  return wrk.format("POST", "/add_entry?list=" .. list .. "&date=2024-01-01&title=t" .. counter)
end
