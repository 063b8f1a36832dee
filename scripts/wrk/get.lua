-- GET /entries over 1,000 lists, chosen at random per request.
math.randomseed(os.time())
request = function()
  return wrk.format("GET", "/entries?list=list" .. math.random(1, 1000) .. "&date=2024-01-01")
end
