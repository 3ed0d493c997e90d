-- One operation of the bench's HTTP flow, for wrk (one wrk process per operation, so
-- wrk's own latency distribution is the operation's). Configured through the
-- environment (wrk passes script arguments to threads only):
--   BENCH_OP      deposit | withdraw | transfer | order_open | order_close | wallet | history
--   BENCH_LIST    file: "token<TAB>accountNumber" per user, or for order_close "token<TAB>orderId"
--   BENCH_PREFIX  prefix of the Idempotency-Keys (unique per run, phase and operation)
--   BENCH_OUT     where done() writes the JSON summary
--   BENCH_WALLET  live | demo (default live)
-- Every mutating request carries a new Idempotency-Key: PREFIX-thread-counter.

local op = os.getenv("BENCH_OP") or "deposit"
local list_file = os.getenv("BENCH_LIST")
local prefix = os.getenv("BENCH_PREFIX") or "k"
local out_file = os.getenv("BENCH_OUT")
local wallet = os.getenv("BENCH_WALLET") or "live"

local threads = {}
local next_id = 1

function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

-- per-thread state (globals of the thread's Lua state)
local tokens, values, n, counter, cursor
status = {}
codes = {}
ok_secs = {}
err_secs = {}
issued = 0
wrapped = 0

function init(args)
  tokens, values = {}, {}
  for line in io.lines(list_file) do
    local t, v = line:match("^([^\t]+)\t([^\t]+)$")
    if t then
      tokens[#tokens + 1] = t
      values[#values + 1] = v
    end
  end
  n = #tokens
  counter = 0
  cursor = 0
  math.randomseed(os.time() * 1000 + (tid or 1) * 7919)
end

local function amount(lo, hi)
  return string.format("%d.%02d", math.random(lo, hi), math.random(0, 99))
end

local json_headers = function(token)
  counter = counter + 1
  return {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = prefix .. "-" .. (tid or 1) .. "-" .. counter,
  }
end

function request()
  issued = issued + 1
  if op == "order_close" then
    cursor = cursor + 1
    if cursor > n then
      cursor = 1
      wrapped = wrapped + 1
    end
    return wrk.format("POST", "/api/v1/orders/" .. values[cursor] .. "/close", json_headers(tokens[cursor]), "{}")
  end
  local i = math.random(1, n)
  local token = tokens[i]
  if op == "deposit" then
    return wrk.format("POST", "/api/v1/wallets/" .. wallet .. "/deposit", json_headers(token), '{"amount":"' .. amount(1, 100) .. '"}')
  elseif op == "withdraw" then
    return wrk.format("POST", "/api/v1/wallets/" .. wallet .. "/withdraw", json_headers(token), '{"amount":"' .. amount(1, 50) .. '"}')
  elseif op == "transfer" then
    local j = math.random(1, n - 1)
    if j >= i then j = j + 1 end
    return wrk.format("POST", "/api/v1/wallets/" .. wallet .. "/transfer", json_headers(token),
      '{"toAccountNumber":"' .. values[j] .. '","amount":"' .. amount(1, 20) .. '"}')
  elseif op == "order_open" then
    local side = (math.random(0, 1) == 0) and "buy" or "sell"
    return wrk.format("POST", "/api/v1/orders", json_headers(token),
      '{"symbol":"EURUSD","side":"' .. side .. '","volume":"0.01","walletType":"' .. wallet .. '"}')
  elseif op == "wallet" then
    return wrk.format("GET", "/api/v1/wallets/" .. wallet, { ["Authorization"] = "Bearer " .. token })
  elseif op == "history" then
    return wrk.format("GET", "/api/v1/wallets/" .. wallet .. "/transactions?limit=20", { ["Authorization"] = "Bearer " .. token })
  end
  return wrk.format("GET", "/health")
end

function response(st, headers, body)
  status[st] = (status[st] or 0) + 1
  local t = os.time()
  if st >= 200 and st < 300 then
    ok_secs[t] = (ok_secs[t] or 0) + 1
  else
    err_secs[t] = (err_secs[t] or 0) + 1
    local code = body and body:match('"code":"([A-Z_]+)"') or "none"
    local k = st .. " " .. code
    codes[k] = (codes[k] or 0) + 1
  end
end

-- JSON of numbers, strings and tables (keys become strings)
local function encode(v)
  local t = type(v)
  if t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then return "null" end
    return string.format("%.17g", v)
  elseif t == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
  elseif t == "boolean" then
    return tostring(v)
  elseif t == "table" then
    local parts = {}
    for k, x in pairs(v) do parts[#parts + 1] = encode(tostring(k)) .. ":" .. encode(x) end
    return "{" .. table.concat(parts, ",") .. "}"
  end
  return "null"
end

local function merge(into, from)
  for k, v in pairs(from or {}) do into[k] = (into[k] or 0) + v end
end

function done(summary, latency, requests)
  local agg = { status = {}, codes = {}, ok_secs = {}, err_secs = {}, issued = 0, wrapped = 0 }
  for _, th in ipairs(threads) do
    merge(agg.status, th:get("status"))
    merge(agg.codes, th:get("codes"))
    merge(agg.ok_secs, th:get("ok_secs"))
    merge(agg.err_secs, th:get("err_secs"))
    agg.issued = agg.issued + (th:get("issued") or 0)
    agg.wrapped = agg.wrapped + (th:get("wrapped") or 0)
  end
  local pct = {}
  for _, p in ipairs({ 50, 75, 90, 95, 99, 99.9 }) do pct[tostring(p)] = latency:percentile(p) end
  local result = {
    op = op,
    duration_us = summary.duration,
    requests = summary.requests,
    bytes = summary.bytes,
    errors = {
      connect = summary.errors.connect, read = summary.errors.read, write = summary.errors.write,
      status = summary.errors.status, timeout = summary.errors.timeout,
    },
    latency_us = { min = latency.min, max = latency.max, mean = latency.mean, stdev = latency.stdev, pct = pct },
    status = agg.status,
    codes = agg.codes,
    ok_secs = agg.ok_secs,
    err_secs = agg.err_secs,
    issued = agg.issued,
    wrapped = agg.wrapped,
  }
  if out_file then
    local f = assert(io.open(out_file, "w"))
    f:write(encode(result))
    f:close()
  else
    io.write(encode(result) .. "\n")
  end
end
