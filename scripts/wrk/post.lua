-- POST /add_entry over 1,000 lists, chosen at random per request.
math.randomseed(os.time())
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("POST", "/add_entry?list=list" .. math.random(1, 1000) .. "&date=2024-01-01&title=t" .. counter)
end
