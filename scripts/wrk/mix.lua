-- The book's mix: 80% GET /entries, 20% POST /add_entry, over 1,000 lists.
math.randomseed(os.time())
counter = 0
request = function()
  local list = "list" .. math.random(1, 1000)
  if math.random() < 0.8 then
    return wrk.format("GET", "/entries?list=" .. list .. "&date=2024-01-01")
  end
  counter = counter + 1
  return wrk.format("POST", "/add_entry?list=" .. list .. "&date=2024-01-01&title=t" .. counter)
end
