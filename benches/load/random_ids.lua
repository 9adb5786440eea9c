-- Requests a random product id (1..10000) on each call, so that a cached
-- route misses instead of coalescing many requests into one load. The
-- path prefix comes from the URL given to wrk; the header from WRK_HEADER.
local prefix
init = function(args)
  prefix = wrk.path:gsub("%d+$", "")
  math.randomseed(os.time() + (tonumber(tostring({}):sub(8), 16) or 0))
end
request = function()
  return wrk.format("GET", prefix .. math.random(1, 10000))
end
