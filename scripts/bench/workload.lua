-- One wrk workload against one system, chosen by environment variables:
--   BENCH_SYSTEM  logkv | logkv-raw | webdis | etcd | plain
--   BENCH_OP      get | put | put-new | health
--   BENCH_KEYS    how many keys were loaded (keys k0000000 … k{N-1})
-- Every answer is checked: a 2xx status (wrk counts the others) and a body
-- that carries a well-formed value; for logkv's JSON route, the value of the
-- very key the answer names. Bad bodies are counted and reported.
local system = os.getenv("BENCH_SYSTEM") or "logkv"
local op = os.getenv("BENCH_OP") or "get"
local keys = tonumber(os.getenv("BENCH_KEYS") or "1000000")

local function keyName(n) return string.format("k%07d", n) end
-- 100 bytes, derived from the key, so any answer can be checked.
local function valueOf(key) return key .. "-" .. string.rep("v", 100 - #key - 1) end

local b64chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function base64(data)
  return ((data:gsub(".", function(x)
    local r, b = "", x:byte()
    for i = 8, 1, -1 do r = r .. (b % 2 ^ i - b % 2 ^ (i - 1) > 0 and "1" or "0") end
    return r
  end) .. "0000"):gsub("%d%d%d?%d?%d?%d?", function(x)
    if #x < 6 then return "" end
    local c = 0
    for i = 1, 6 do c = c + (x:sub(i, i) == "1" and 2 ^ (6 - i) or 0) end
    return b64chars:sub(c + 1, c + 1)
  end) .. ({ "", "==", "=" })[#data % 3 + 1])
end

local threads = {}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

bad = 0
local counter = 0
function init(args)
  math.randomseed(os.time() * 1000 + (id or 0))
end

local function nextKey()
  if op == "put-new" then
    counter = counter + 1
    return string.format("n%d-%d-%d", id or 0, os.time(), counter)
  end
  return keyName(math.random(0, keys - 1))
end

request = function()
  if op == "health" then return wrk.format("GET", "/health") end
  local key = nextKey()
  if op == "get" then
    if system == "logkv" then return wrk.format("GET", "/v1/kv/" .. key) end
    if system == "logkv-raw" then return wrk.format("GET", "/v1/kv/" .. key .. "?raw") end
    if system == "webdis" then return wrk.format("GET", "/GET/" .. key) end
    if system == "etcd" then
      return wrk.format("POST", "/v3/kv/range", { ["Content-Type"] = "application/json" },
        '{"key":"' .. base64(key) .. '"}')
    end
  else
    local value = valueOf(key)
    if system == "logkv" then
      return wrk.format("PUT", "/v1/kv", { ["Content-Type"] = "application/json" },
        '{"key":"' .. key .. '","value":"' .. value .. '"}')
    end
    if system == "logkv-raw" then return wrk.format("PUT", "/v1/kv/" .. key, nil, value) end
    if system == "webdis" then return wrk.format("PUT", "/SET/" .. key, nil, value) end
    if system == "etcd" then
      return wrk.format("POST", "/v3/kv/put", { ["Content-Type"] = "application/json" },
        '{"key":"' .. base64(key) .. '","value":"' .. base64(value) .. '"}')
    end
  end
  error("unknown workload " .. system .. " " .. op)
end

local function wellFormed(value)
  local key = value and value:match("^(k%d%d%d%d%d%d%d)%-v+$")
  return key ~= nil and #value == 100
end

response = function(status, headers, body)
  if status < 200 or status > 299 then return end -- wrk counts these
  if op == "health" then
    if body ~= "ok" and body ~= "ok\n" then bad = bad + 1 end
  elseif op == "get" then
    local ok
    if system == "logkv" then
      local key = body:match('"key":"([^"]*)"')
      ok = key ~= nil and body:match('"value":"([^"]*)"') == valueOf(key)
    elseif system == "logkv-raw" then
      ok = wellFormed(body)
    elseif system == "webdis" then
      ok = wellFormed(body:match('^{"GET":"([^"]*)"}$'))
    elseif system == "etcd" then
      ok = body:find('"kvs":%[{') ~= nil and body:find('"count":"1"') ~= nil
    end
    if not ok then bad = bad + 1 end
  elseif system == "webdis" then
    if not body:find('"SET":%[true,"OK"%]') and not body:find('"SET":"OK"') then bad = bad + 1 end
  end
end

done = function(summary, latency, requests)
  local wrong = 0
  for _, t in ipairs(threads) do wrong = wrong + (t:get("bad") or 0) end
  local e = summary.errors
  io.write(string.format("RESULT %.0f %.3f %.3f %d %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    e.status + e.connect + e.read + e.write + e.timeout, wrong))
end
