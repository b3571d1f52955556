/**
 * The Lua scripts of the Redis backend. Each multi-step operation is ONE script, so Redis runs it
 * without any other command interleaving: every script checks everything first and only then
 * writes, so a failed check writes nothing. A failed check returns `{ CODE, id? }` (redis.ts maps
 * it to a StoreError); success returns `{ 'OK', ... }`.
 *
 * Keys are built inside the scripts from the prefix (ARGV[1]). KEYS[1] is the meta hash, declared
 * so that a Cluster routes the script to the node of the deployment's slot: in Cluster mode the
 * prefix is a hash tag (`{provisiond:}`), so every key built here hashes to that same slot.
 *
 * Key layout (P = prefix):
 *   P dev:{id}          hash: record (JSON), rev, tenant, state, cch, dl (the record's deadlineAt or '')
 *   P due:{state}       zset (score 0) of '<deadlineAt>|<id>' of the devices in that state that have a
 *                       deadline: the stall scan reads the ones due by ZRANGEBYLEX, not every device
 *   P idx:due           '1' once the due index covers every device (built at start when missing)
 *   P devids            zset (score 0) of every device id, ordered by ZRANGEBYLEX (byte order)
 *   P tdevids:{tenant}  zset (score 0) of the tenant's device ids
 *   P cch               hash claim-code hash -> device id (unique index)
 *   P counts            hash state -> number of devices; P tcounts:{tenant} per tenant
 *   P ev:{id}           list of event JSON, oldest first
 *   P tok:{jti}         bootstrap token JSON
 *   P tokexp            zset (score 0) of '<expiresAt>|<jti>' of the tokens not consumed yet: the
 *                       sweep of expired ones reads it by ZRANGEBYLEX, not every token
 *   P idx:tokexp        '1' once tokexp covers every token (built at start when missing)
 *   P cert:{serial}     certificate JSON
 *   P dcerts:{id}       list of the device's certificate serials, in insertion order
 *   P kcerts:{fp}       list of serials with this key fingerprint, in insertion order
 *   P kdevs:{fp}        set of device ids holding a certificate with this key fingerprint
 *   P revoked           set of serials whose status is 'revoked'
 *   P cfg:{id}          hash version -> config document JSON
 *   P tenants           hash id -> tenant JSON
 *   P prof:{byteLength(tenant)}:{tenant}:{id}  hash version -> profile JSON
 *   P profids:{tenant}  hash profile id -> latest version
 *   P apikeys           hash id -> api key JSON; P tkeys:{tenant} set of key ids
 *   P meta              hash
 *   P audit             stream of audit entries (one field, r = the entry's JSON), only ever
 *                       appended to (XADD); no script or method trims or deletes from it
 */

const COMMON = `
local P = ARGV[1]
local function adjcount(tenant, state, delta)
  local keys = { P .. 'counts', P .. 'tcounts:' .. tenant }
  for _, k in ipairs(keys) do
    local n = redis.call('HINCRBY', k, state, delta)
    if n <= 0 then redis.call('HDEL', k, state) end
  end
end
local function profkey(tenant, id)
  return P .. 'prof:' .. #tenant .. ':' .. tenant .. ':' .. id
end
local function isset(v)
  return v ~= nil and v ~= cjson.null
end
local function deadlineof(rec)
  local d = cjson.decode(rec).deadlineAt
  if type(d) ~= 'string' then return '' end
  return d
end
-- ARGV[i] = n, then n audit entry JSONs; returns the index after them
local function appendaudit(i)
  local n = tonumber(ARGV[i])
  for j = 1, n do
    redis.call('XADD', P .. 'audit', '*', 'r', ARGV[i + j])
  end
  return i + n + 1
end
-- a token JSON not consumed yet goes into the expiry index (the sweep of expired tokens reads it)
local function tokindex(jti, json)
  local ok, t = pcall(cjson.decode, json)
  if ok and type(t) == 'table' and type(t.expiresAt) == 'string' and not isset(t.consumedAt) then
    redis.call('ZADD', P .. 'tokexp', 0, t.expiresAt .. '|' .. jti)
  end
end
local function dueindex(id, oldstate, olddl, state, dl)
  if oldstate and olddl and olddl ~= '' then redis.call('ZREM', P .. 'due:' .. oldstate, olddl .. '|' .. id) end
  if dl ~= '' then redis.call('ZADD', P .. 'due:' .. state, 0, dl .. '|' .. id) end
end
`;

/**
 * Device write (shared by updateDevice and commitIssuance). args from position i:
 * id, expectedRev, newRev, cch, tenant, state, record
 */
const DEVICE_WRITE = `
local function devcheck(id, expected)
  local rev = redis.call('HGET', P .. 'dev:' .. id, 'rev')
  if not rev then return 'DEVICE_NOT_FOUND' end
  if rev ~= expected then return 'REVISION_CONFLICT' end
  return nil
end
local function cchcheck(id, cch)
  local holder = redis.call('HGET', P .. 'cch', cch)
  if holder and holder ~= id then return 'CLAIM_CODE_IN_USE' end
  return nil
end
local function devwrite(id, newrev, cch, tenant, state, rec)
  local key = P .. 'dev:' .. id
  local old = redis.call('HMGET', key, 'tenant', 'state', 'cch', 'dl')
  local oldtenant, oldstate, oldcch, olddl = old[1], old[2], old[3], old[4]
  local dl = deadlineof(rec)
  dueindex(id, oldstate, olddl, state, dl)
  if oldcch ~= cch then
    if redis.call('HGET', P .. 'cch', oldcch) == id then redis.call('HDEL', P .. 'cch', oldcch) end
    redis.call('HSET', P .. 'cch', cch, id)
  end
  if oldtenant ~= tenant then
    redis.call('ZREM', P .. 'tdevids:' .. oldtenant, id)
    redis.call('ZADD', P .. 'tdevids:' .. tenant, 0, id)
  end
  adjcount(oldtenant, oldstate, -1)
  adjcount(tenant, state, 1)
  redis.call('HSET', key, 'record', rec, 'rev', newrev, 'tenant', tenant, 'state', state, 'cch', cch, 'dl', dl)
end
local function appendevents(i)
  local n = tonumber(ARGV[i])
  for j = 1, n do
    local did = ARGV[i + 2 * j - 1]
    redis.call('RPUSH', P .. 'ev:' .. did, ARGV[i + 2 * j])
  end
  return i + 2 * n + 1
end
`;

/** ARGV: P, n, n x (id, cch, tenant, state, revision, record), m, m x (deviceId, eventJson) */
export const INSERT_DEVICES = `${COMMON}${DEVICE_WRITE}
local n = tonumber(ARGV[2])
local seencch = {}
for j = 0, n - 1 do
  local b = 3 + 6 * j
  local id, cch = ARGV[b], ARGV[b + 1]
  if redis.call('EXISTS', P .. 'dev:' .. id) == 1 then return { 'DEVICE_EXISTS', id } end
  if redis.call('HEXISTS', P .. 'cch', cch) == 1 or seencch[cch] then return { 'CLAIM_CODE_IN_USE', id } end
  seencch[cch] = true
end
for j = 0, n - 1 do
  local b = 3 + 6 * j
  local id, cch, tenant, state, rev, rec = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  local dl = deadlineof(rec)
  redis.call('HSET', P .. 'dev:' .. id, 'record', rec, 'rev', rev, 'tenant', tenant, 'state', state, 'cch', cch, 'dl', dl)
  dueindex(id, nil, nil, state, dl)
  redis.call('ZADD', P .. 'devids', 0, id)
  redis.call('ZADD', P .. 'tdevids:' .. tenant, 0, id)
  redis.call('HSET', P .. 'cch', cch, id)
  adjcount(tenant, state, 1)
end
appendevents(3 + 6 * n)
return { 'OK' }
`;

/**
 * ARGV: P, id, expectedRev, newRev, cch, tenant, state, record,
 *   c, c x (serial, status, hasRevokedAt, revokedAt, hasReason, reason),
 *   hasCfg, cfgVersion, cfgJson,
 *   m, m x (deviceId, eventJson),
 *   a, a x auditJson
 */
export const UPDATE_DEVICE = `${COMMON}${DEVICE_WRITE}
local id, expected, newrev, cch, tenant, state, rec = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local err = devcheck(id, expected)
if err then return { err } end
local c = tonumber(ARGV[9])
local changed = {}
for j = 0, c - 1 do
  local b = 10 + 6 * j
  local serial = ARGV[b]
  local raw = redis.call('GET', P .. 'cert:' .. serial)
  if not raw then return { 'CERTIFICATE_NOT_FOUND', serial } end
  local cert = cjson.decode(raw)
  if cert.deviceId ~= id then return { 'CERTIFICATE_NOT_FOUND', serial } end
  cert.status = ARGV[b + 1]
  cert.revokedAt = nil
  cert.revocationReason = nil
  if ARGV[b + 2] == '1' then cert.revokedAt = ARGV[b + 3] end
  if ARGV[b + 4] == '1' then cert.revocationReason = ARGV[b + 5] end
  changed[#changed + 1] = { serial, cjson.encode(cert), cert.status }
end
local i = 10 + 6 * c
local hascfg = ARGV[i] == '1'
local cfgver, cfgjson = ARGV[i + 1], ARGV[i + 2]
if hascfg and redis.call('HEXISTS', P .. 'cfg:' .. id, cfgver) == 1 then return { 'CONFIG_VERSION_EXISTS' } end
err = cchcheck(id, cch)
if err then return { err } end
-- writes
for _, ch in ipairs(changed) do
  redis.call('SET', P .. 'cert:' .. ch[1], ch[2])
  if ch[3] == 'revoked' then redis.call('SADD', P .. 'revoked', ch[1]) else redis.call('SREM', P .. 'revoked', ch[1]) end
end
if hascfg then redis.call('HSET', P .. 'cfg:' .. id, cfgver, cfgjson) end
devwrite(id, newrev, cch, tenant, state, rec)
appendaudit(appendevents(i + 3))
return { 'OK' }
`;

/**
 * ARGV: P, id, expectedRev, newRev, cch, tenant, state, record,
 *   hasToken, jti, consumedAt,
 *   serial, keyFingerprint, certJson,
 *   hasCfg, cfgVersion, cfgJson,
 *   prevMode ('superseded' | 'revoked'), revokedAt, revocationReason,
 *   m, m x (deviceId, eventJson),
 *   a, a x auditJson
 */
export const COMMIT_ISSUANCE = `${COMMON}${DEVICE_WRITE}
local id, expected, newrev, cch, tenant, state, rec = ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local hastoken, jti, consumedat = ARGV[9] == '1', ARGV[10], ARGV[11]
local serial, fp, certjson = ARGV[12], ARGV[13], ARGV[14]
local hascfg, cfgver, cfgjson = ARGV[15] == '1', ARGV[16], ARGV[17]
local prevmode, prevrevokedat, prevreason = ARGV[18], ARGV[19], ARGV[20]
-- checks, in the documented order
local err = devcheck(id, expected)
if err then return { err } end
local token
if hastoken then
  local raw = redis.call('GET', P .. 'tok:' .. jti)
  if not raw then return { 'TOKEN_NOT_FOUND' } end
  token = cjson.decode(raw)
  if token.deviceId ~= id then return { 'TOKEN_NOT_FOUND' } end
  if isset(token.consumedAt) then return { 'TOKEN_USED' } end
end
if redis.call('EXISTS', P .. 'cert:' .. serial) == 1 then return { 'SERIAL_EXISTS' } end
local holders = redis.call('SMEMBERS', P .. 'kdevs:' .. fp)
for _, holder in ipairs(holders) do
  if holder ~= id then return { 'KEY_IN_USE' } end
end
if hascfg and redis.call('HEXISTS', P .. 'cfg:' .. id, cfgver) == 1 then return { 'CONFIG_VERSION_EXISTS' } end
err = cchcheck(id, cch)
if err then return { err } end
-- writes
if hastoken then
  token.consumedAt = consumedat
  token.keyFingerprint = fp
  token.certificateSerial = serial
  redis.call('SET', P .. 'tok:' .. jti, cjson.encode(token))
  if type(token.expiresAt) == 'string' then redis.call('ZREM', P .. 'tokexp', token.expiresAt .. '|' .. jti) end
end
local serials = redis.call('LRANGE', P .. 'dcerts:' .. id, 0, -1)
for _, s in ipairs(serials) do
  local raw = redis.call('GET', P .. 'cert:' .. s)
  if raw then
    local cert = cjson.decode(raw)
    if cert.status == 'active' then
      if prevmode == 'revoked' then
        cert.status = 'revoked'
        cert.revokedAt = prevrevokedat
        cert.revocationReason = prevreason
        redis.call('SADD', P .. 'revoked', s)
      else
        cert.status = 'superseded'
      end
      redis.call('SET', P .. 'cert:' .. s, cjson.encode(cert))
    end
  end
end
redis.call('SET', P .. 'cert:' .. serial, certjson)
redis.call('RPUSH', P .. 'dcerts:' .. id, serial)
redis.call('RPUSH', P .. 'kcerts:' .. fp, serial)
redis.call('SADD', P .. 'kdevs:' .. fp, id)
if hascfg then redis.call('HSET', P .. 'cfg:' .. id, cfgver, cfgjson) end
devwrite(id, newrev, cch, tenant, state, rec)
appendaudit(appendevents(21))
return { 'OK' }
`;

/** ARGV: P, jti, deviceId, json */
export const INSERT_TOKEN = `${COMMON}
if redis.call('EXISTS', P .. 'tok:' .. ARGV[2]) == 1 then return { 'TOKEN_EXISTS' } end
if redis.call('EXISTS', P .. 'dev:' .. ARGV[3]) == 0 then return { 'DEVICE_NOT_FOUND' } end
redis.call('SET', P .. 'tok:' .. ARGV[2], ARGV[4])
tokindex(ARGV[2], ARGV[4])
return { 'OK' }
`;

/** ARGV: P, tenantId, id, version, json */
export const INSERT_PROFILE_VERSION = `${COMMON}
local tenant, id, version, json = ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local key = profkey(tenant, id)
if redis.call('HEXISTS', key, tostring(version)) == 1 then return { 'PROFILE_VERSION_EXISTS' } end
if version > 1 and redis.call('HEXISTS', key, tostring(version - 1)) == 0 then return { 'PROFILE_VERSION_GAP' } end
redis.call('HSET', key, tostring(version), json)
local latest = tonumber(redis.call('HGET', P .. 'profids:' .. tenant, id) or '0')
if version > latest then redis.call('HSET', P .. 'profids:' .. tenant, id, tostring(version)) end
return { 'OK' }
`;

/** ARGV: P, id, json */
export const INSERT_TENANT = `${COMMON}
if redis.call('HSETNX', P .. 'tenants', ARGV[2], ARGV[3]) == 0 then return { 'TENANT_EXISTS' } end
return { 'OK' }
`;

/** ARGV: P, id, json */
export const UPDATE_TENANT = `${COMMON}
if redis.call('HEXISTS', P .. 'tenants', ARGV[2]) == 0 then return { 'TENANT_NOT_FOUND' } end
redis.call('HSET', P .. 'tenants', ARGV[2], ARGV[3])
return { 'OK' }
`;

/** ARGV: P, id, tenantId, json, a, a x auditJson */
export const INSERT_API_KEY = `${COMMON}
if redis.call('HEXISTS', P .. 'apikeys', ARGV[2]) == 1 then return { 'API_KEY_EXISTS' } end
redis.call('HSET', P .. 'apikeys', ARGV[2], ARGV[4])
redis.call('SADD', P .. 'tkeys:' .. ARGV[3], ARGV[2])
appendaudit(5)
return { 'OK' }
`;

/** ARGV: P, id, a, a x auditJson (appended only when the key existed). Returns { 'OK', 1 | 0 }. */
export const DELETE_API_KEY = `${COMMON}
local raw = redis.call('HGET', P .. 'apikeys', ARGV[2])
if not raw then return { 'OK', 0 } end
local key = cjson.decode(raw)
redis.call('HDEL', P .. 'apikeys', ARGV[2])
if type(key.tenantId) == 'string' then redis.call('SREM', P .. 'tkeys:' .. key.tenantId, ARGV[2]) end
appendaudit(3)
return { 'OK', 1 }
`;

/** ARGV: P, a, a x auditJson. Appends in order, all in one script. */
export const APPEND_AUDIT = `${COMMON}
appendaudit(2)
return { 'OK' }
`;

/** ARGV: P, index key, start (ZRANGEBYLEX min), count. Returns a flat list id, record, id, record... */
export const DEVICE_PAGE = `${COMMON}
local ids = redis.call('ZRANGEBYLEX', ARGV[2], ARGV[3], '+', 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', P .. 'dev:' .. id, 'record') or ''
end
return out
`;

/** ARGV: P, list key, kind ('list' | 'set'), value prefix. Returns the values of the listed keys, in order. */
export const GET_LISTED = `${COMMON}
local members
if ARGV[3] == 'set' then members = redis.call('SMEMBERS', ARGV[2]) else members = redis.call('LRANGE', ARGV[2], 0, -1) end
local out = {}
for _, m in ipairs(members) do
  out[#out + 1] = redis.call('GET', ARGV[4] .. m) or ''
end
return out
`;

/** ARGV: P, tenant. The latest version of each of the tenant's profiles (unordered). */
export const LATEST_PROFILES = `${COMMON}
local flat = redis.call('HGETALL', P .. 'profids:' .. ARGV[2])
local out = {}
for j = 1, #flat, 2 do
  local key = profkey(ARGV[2], flat[j])
  out[#out + 1] = redis.call('HGET', key, flat[j + 1]) or ''
end
return out
`;

/** ARGV: P, tenant. The tenant's API keys (unordered). */
export const TENANT_API_KEYS = `${COMMON}
local ids = redis.call('SMEMBERS', P .. 'tkeys:' .. ARGV[2])
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = redis.call('HGET', P .. 'apikeys', id) or ''
end
return out
`;

// --- whole-store export, import and counts (src/store/copy.ts) -----------------------------------

/**
 * ARGV: P, cursor, count. One SCAN step over the keys under the prefix (inside a script, so that it
 * runs where the deployment's keys are). Returns { cursor, profile version hash keys,
 * flat { jti, deviceId } of bootstrap tokens }: tokens have no per-device index, so exports and
 * counts find them this way. SCAN may return a key twice: the caller de-duplicates.
 */
export const EXPORT_SCAN = `${COMMON}
local BS = string.char(92)
local pattern = (string.gsub(P, '[%*%?%[%]' .. BS .. ']', function(c) return BS .. c end)) .. '*'
local res = redis.call('SCAN', ARGV[2], 'MATCH', pattern, 'COUNT', tonumber(ARGV[3]))
local plen = #P
local profs, toks = {}, {}
for _, key in ipairs(res[2]) do
  if string.sub(key, 1, plen) == P then
    local rest = string.sub(key, plen + 1)
    if string.sub(rest, 1, 5) == 'prof:' then
      profs[#profs + 1] = key
    elseif string.sub(rest, 1, 4) == 'tok:' then
      local raw = redis.call('GET', key)
      if raw then
        local ok, token = pcall(cjson.decode, raw)
        toks[#toks + 1] = string.sub(rest, 5)
        toks[#toks + 1] = (ok and type(token) == 'table' and type(token.deviceId) == 'string') and token.deviceId or ''
      end
    end
  end
end
return { res[1], profs, toks }
`;

/**
 * ARGV: P, n, n x (id, k, k x jti). For each device: { id, record ('' if gone), events,
 * certificates (in dcerts order), config documents (unordered), the tokens named }.
 */
export const EXPORT_DEVICES = `${COMMON}
local out = {}
local i = 3
for j = 1, tonumber(ARGV[2]) do
  local id, k = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local rec = redis.call('HGET', P .. 'dev:' .. id, 'record') or ''
  local events = redis.call('LRANGE', P .. 'ev:' .. id, 0, -1)
  local certs = {}
  for _, s in ipairs(redis.call('LRANGE', P .. 'dcerts:' .. id, 0, -1)) do
    certs[#certs + 1] = redis.call('GET', P .. 'cert:' .. s) or ''
  end
  local cfgs = redis.call('HVALS', P .. 'cfg:' .. id)
  local toks = {}
  for t = 0, k - 1 do
    toks[#toks + 1] = redis.call('GET', P .. 'tok:' .. ARGV[i + t]) or ''
  end
  i = i + k
  out[#out + 1] = { id, rec, events, certs, cfgs, toks }
end
return out
`;

/**
 * ARGV: P, start (ZRANGEBYLEX min), count. Returns { devices in the page, last id, events,
 * certificates, config documents } of the page.
 */
export const COUNT_DEVICES = `${COMMON}
local ids = redis.call('ZRANGEBYLEX', P .. 'devids', ARGV[2], '+', 'LIMIT', 0, tonumber(ARGV[3]))
local ev, certs, cfgs = 0, 0, 0
for _, id in ipairs(ids) do
  ev = ev + redis.call('LLEN', P .. 'ev:' .. id)
  certs = certs + redis.call('LLEN', P .. 'dcerts:' .. id)
  cfgs = cfgs + redis.call('HLEN', P .. 'cfg:' .. id)
end
return { #ids, ids[#ids] or '', ev, certs, cfgs }
`;

/**
 * Verbatim import of a batch of exported entries, all or nothing: every entry is checked (against
 * the store and the rest of the batch) before anything is written. Returns { 'OK' } or
 * { 'IMPORT_CONFLICT', kind, id }.
 * ARGV: P, then entries, each one of
 *   't', id, json                                  tenant
 *   'p', tenant, id, version, json                 profile version
 *   'k', id, tenant, json                          API key
 *   'm', key, value                                meta
 *   'a', json                                      audit entry (appended in batch order)
 *   'd', id, cch, tenant, state, revision, record, device with
 *        e, e x eventJson,
 *        c, c x (serial, keyFingerprint, status, certJson),
 *        g, g x (version, cfgJson),
 *        t, t x (jti, tokenJson)
 */
export const IMPORT_ENTRIES = `${COMMON}
local items = {}
local i = 2
local n = #ARGV
while i <= n do
  local kind = ARGV[i]
  if kind == 't' then
    items[#items + 1] = { kind = kind, id = ARGV[i + 1], json = ARGV[i + 2] }
    i = i + 3
  elseif kind == 'p' then
    items[#items + 1] = { kind = kind, tenant = ARGV[i + 1], id = ARGV[i + 2], version = ARGV[i + 3], json = ARGV[i + 4] }
    i = i + 5
  elseif kind == 'k' then
    items[#items + 1] = { kind = kind, id = ARGV[i + 1], tenant = ARGV[i + 2], json = ARGV[i + 3] }
    i = i + 4
  elseif kind == 'm' then
    items[#items + 1] = { kind = kind, key = ARGV[i + 1], value = ARGV[i + 2] }
    i = i + 3
  elseif kind == 'a' then
    items[#items + 1] = { kind = kind, json = ARGV[i + 1] }
    i = i + 2
  elseif kind == 'd' then
    local d = { kind = kind, id = ARGV[i + 1], cch = ARGV[i + 2], tenant = ARGV[i + 3], state = ARGV[i + 4], rev = ARGV[i + 5], rec = ARGV[i + 6] }
    i = i + 7
    d.events = {}
    local e = tonumber(ARGV[i])
    for j = 1, e do d.events[j] = ARGV[i + j] end
    i = i + e + 1
    d.certs = {}
    local c = tonumber(ARGV[i])
    for j = 0, c - 1 do
      local b = i + 1 + 4 * j
      d.certs[j + 1] = { serial = ARGV[b], fp = ARGV[b + 1], status = ARGV[b + 2], json = ARGV[b + 3] }
    end
    i = i + 4 * c + 1
    d.cfgs = {}
    local g = tonumber(ARGV[i])
    for j = 0, g - 1 do d.cfgs[j + 1] = { version = ARGV[i + 1 + 2 * j], json = ARGV[i + 2 + 2 * j] } end
    i = i + 2 * g + 1
    d.toks = {}
    local t = tonumber(ARGV[i])
    for j = 0, t - 1 do d.toks[j + 1] = { jti = ARGV[i + 1 + 2 * j], json = ARGV[i + 2 + 2 * j] } end
    i = i + 2 * t + 1
    items[#items + 1] = d
  else
    return { 'BAD_IMPORT_ARGUMENTS' }
  end
end
-- checks: nothing is written before all of them pass
local seen = { t = {}, p = {}, k = {}, m = {}, d = {}, cch = {}, cert = {}, fp = {}, tok = {} }
for _, it in ipairs(items) do
  if it.kind == 't' then
    if seen.t[it.id] or redis.call('HEXISTS', P .. 'tenants', it.id) == 1 then return { 'IMPORT_CONFLICT', 'tenant', it.id } end
    seen.t[it.id] = true
  elseif it.kind == 'p' then
    local pk = profkey(it.tenant, it.id)
    local sk = pk .. '@' .. it.version
    if seen.p[sk] or redis.call('HEXISTS', pk, it.version) == 1 then
      return { 'IMPORT_CONFLICT', 'profile version', it.tenant .. '/' .. it.id .. '@' .. it.version }
    end
    seen.p[sk] = true
  elseif it.kind == 'k' then
    if seen.k[it.id] or redis.call('HEXISTS', P .. 'apikeys', it.id) == 1 then return { 'IMPORT_CONFLICT', 'API key', it.id } end
    seen.k[it.id] = true
  elseif it.kind == 'm' then
    if seen.m[it.key] or redis.call('HEXISTS', P .. 'meta', it.key) == 1 then return { 'IMPORT_CONFLICT', 'meta key', it.key } end
    seen.m[it.key] = true
  elseif it.kind == 'a' then
    -- audit entries are appended: nothing to conflict with
  else
    local id = it.id
    if seen.d[id] or redis.call('EXISTS', P .. 'dev:' .. id, P .. 'ev:' .. id, P .. 'dcerts:' .. id, P .. 'cfg:' .. id) > 0 then
      return { 'IMPORT_CONFLICT', 'device', id }
    end
    seen.d[id] = true
    if seen.cch[it.cch] or redis.call('HEXISTS', P .. 'cch', it.cch) == 1 then return { 'IMPORT_CONFLICT', 'claim code of device', id } end
    seen.cch[it.cch] = true
    for _, c in ipairs(it.certs) do
      if seen.cert[c.serial] or redis.call('EXISTS', P .. 'cert:' .. c.serial) == 1 then return { 'IMPORT_CONFLICT', 'certificate', c.serial } end
      seen.cert[c.serial] = true
      local holder = seen.fp[c.fp]
      if holder and holder ~= id then return { 'IMPORT_CONFLICT', 'certificate key fingerprint', c.fp } end
      for _, other in ipairs(redis.call('SMEMBERS', P .. 'kdevs:' .. c.fp)) do
        if other ~= id then return { 'IMPORT_CONFLICT', 'certificate key fingerprint', c.fp } end
      end
      seen.fp[c.fp] = id
    end
    local versions = {}
    for _, g in ipairs(it.cfgs) do
      if versions[g.version] then return { 'IMPORT_CONFLICT', 'config document', id .. '@' .. g.version } end
      versions[g.version] = true
    end
    for _, t in ipairs(it.toks) do
      if seen.tok[t.jti] or redis.call('EXISTS', P .. 'tok:' .. t.jti) == 1 then return { 'IMPORT_CONFLICT', 'bootstrap token', t.jti } end
      seen.tok[t.jti] = true
    end
  end
end
-- writes, with every index the other scripts keep
for _, it in ipairs(items) do
  if it.kind == 't' then
    redis.call('HSET', P .. 'tenants', it.id, it.json)
  elseif it.kind == 'p' then
    redis.call('HSET', profkey(it.tenant, it.id), it.version, it.json)
    local latest = tonumber(redis.call('HGET', P .. 'profids:' .. it.tenant, it.id) or '0')
    if tonumber(it.version) > latest then redis.call('HSET', P .. 'profids:' .. it.tenant, it.id, it.version) end
  elseif it.kind == 'k' then
    redis.call('HSET', P .. 'apikeys', it.id, it.json)
    redis.call('SADD', P .. 'tkeys:' .. it.tenant, it.id)
  elseif it.kind == 'm' then
    redis.call('HSET', P .. 'meta', it.key, it.value)
  elseif it.kind == 'a' then
    redis.call('XADD', P .. 'audit', '*', 'r', it.json)
  else
    local id = it.id
    local dl = deadlineof(it.rec)
    redis.call('HSET', P .. 'dev:' .. id, 'record', it.rec, 'rev', it.rev, 'tenant', it.tenant, 'state', it.state, 'cch', it.cch, 'dl', dl)
    dueindex(id, nil, nil, it.state, dl)
    redis.call('ZADD', P .. 'devids', 0, id)
    redis.call('ZADD', P .. 'tdevids:' .. it.tenant, 0, id)
    redis.call('HSET', P .. 'cch', it.cch, id)
    adjcount(it.tenant, it.state, 1)
    for _, e in ipairs(it.events) do redis.call('RPUSH', P .. 'ev:' .. id, e) end
    for _, c in ipairs(it.certs) do
      redis.call('SET', P .. 'cert:' .. c.serial, c.json)
      redis.call('RPUSH', P .. 'dcerts:' .. id, c.serial)
      redis.call('RPUSH', P .. 'kcerts:' .. c.fp, c.serial)
      redis.call('SADD', P .. 'kdevs:' .. c.fp, id)
      if c.status == 'revoked' then redis.call('SADD', P .. 'revoked', c.serial) end
    end
    for _, g in ipairs(it.cfgs) do redis.call('HSET', P .. 'cfg:' .. id, g.version, g.json) end
    for _, t in ipairs(it.toks) do
      redis.call('SET', P .. 'tok:' .. t.jti, t.json)
      tokindex(t.jti, t.json)
    end
  end
end
return { 'OK' }
`;

/**
 * The devices in any of the given states whose deadline is before an instant, from the due index.
 * ARGV: P, before, n, n x state. Returns a flat list of records.
 */
export const DUE_DEVICES = `${COMMON}
local before, n = ARGV[2], tonumber(ARGV[3])
local out = {}
for j = 1, n do
  for _, member in ipairs(redis.call('ZRANGEBYLEX', P .. 'due:' .. ARGV[3 + j], '-', '(' .. before)) do
    local id = string.sub(member, string.find(member, '|', 1, true) + 1)
    out[#out + 1] = redis.call('HGET', P .. 'dev:' .. id, 'record') or ''
  end
end
return out
`;

/**
 * Builds the due index for devices written before it existed, one page of the id index at a time.
 * ARGV: P, start (ZRANGEBYLEX bound), count. Returns the last id of the page ('' when done).
 */
export const BUILD_DUE_INDEX = `${COMMON}
local ids = redis.call('ZRANGEBYLEX', P .. 'devids', ARGV[2], '+', 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do
  local key = P .. 'dev:' .. id
  local h = redis.call('HMGET', key, 'state', 'record', 'dl')
  if h[2] and not h[3] then
    local dl = deadlineof(h[2])
    redis.call('HSET', key, 'dl', dl)
    dueindex(id, nil, nil, h[1], dl)
  end
end
if #ids < tonumber(ARGV[3]) then
  redis.call('SET', P .. 'idx:due', '1')
  return ''
end
return ids[#ids]
`;

/**
 * Deletes tokens not consumed whose expiresAt is before an instant, from the expiry index.
 * ARGV: P, before, limit. Returns the deleted tokens' JSON. An index entry whose token is gone or
 * consumed is dropped without counting.
 */
export const DELETE_EXPIRED_TOKENS = `${COMMON}
local out = {}
for _, member in ipairs(redis.call('ZRANGEBYLEX', P .. 'tokexp', '-', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))) do
  local jti = string.sub(member, string.find(member, '|', 1, true) + 1)
  redis.call('ZREM', P .. 'tokexp', member)
  local raw = redis.call('GET', P .. 'tok:' .. jti)
  if raw then
    local ok, t = pcall(cjson.decode, raw)
    if ok and type(t) == 'table' and not isset(t.consumedAt) then
      redis.call('DEL', P .. 'tok:' .. jti)
      out[#out + 1] = raw
    end
  end
end
return out
`;

/**
 * Builds the token expiry index for tokens written before it existed: one SCAN step over the keys
 * under the prefix (as EXPORT_SCAN). ARGV: P, cursor, count. Returns the next cursor; at '0' the
 * index is marked complete.
 */
export const BUILD_TOKEN_INDEX = `${COMMON}
local BS = string.char(92)
local pattern = (string.gsub(P, '[%*%?%[%]' .. BS .. ']', function(c) return BS .. c end)) .. 'tok:*'
local res = redis.call('SCAN', ARGV[2], 'MATCH', pattern, 'COUNT', tonumber(ARGV[3]))
local plen = #P
for _, key in ipairs(res[2]) do
  if string.sub(key, 1, plen + 4) == P .. 'tok:' then
    local raw = redis.call('GET', key)
    if raw then tokindex(string.sub(key, plen + 5), raw) end
  end
end
if res[1] == '0' then redis.call('SET', P .. 'idx:tokexp', '1') end
return res[1]
`;
