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
 *   P dev:{id}          hash: record (JSON), rev, tenant, state, cch
 *   P devids            zset (score 0) of every device id, ordered by ZRANGEBYLEX (byte order)
 *   P tdevids:{tenant}  zset (score 0) of the tenant's device ids
 *   P cch               hash claim-code hash -> device id (unique index)
 *   P counts            hash state -> number of devices; P tcounts:{tenant} per tenant
 *   P ev:{id}           list of event JSON, oldest first
 *   P tok:{jti}         bootstrap token JSON
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
  local old = redis.call('HMGET', key, 'tenant', 'state', 'cch')
  local oldtenant, oldstate, oldcch = old[1], old[2], old[3]
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
  redis.call('HSET', key, 'record', rec, 'rev', newrev, 'tenant', tenant, 'state', state, 'cch', cch)
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
  redis.call('HSET', P .. 'dev:' .. id, 'record', rec, 'rev', rev, 'tenant', tenant, 'state', state, 'cch', cch)
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
 *   m, m x (deviceId, eventJson)
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
appendevents(i + 3)
return { 'OK' }
`;

/**
 * ARGV: P, id, expectedRev, newRev, cch, tenant, state, record,
 *   hasToken, jti, consumedAt,
 *   serial, keyFingerprint, certJson,
 *   hasCfg, cfgVersion, cfgJson,
 *   prevMode ('superseded' | 'revoked'), revokedAt, revocationReason,
 *   m, m x (deviceId, eventJson)
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
appendevents(21)
return { 'OK' }
`;

/** ARGV: P, jti, deviceId, json */
export const INSERT_TOKEN = `${COMMON}
if redis.call('EXISTS', P .. 'tok:' .. ARGV[2]) == 1 then return { 'TOKEN_EXISTS' } end
if redis.call('EXISTS', P .. 'dev:' .. ARGV[3]) == 0 then return { 'DEVICE_NOT_FOUND' } end
redis.call('SET', P .. 'tok:' .. ARGV[2], ARGV[4])
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

/** ARGV: P, id, tenantId, json */
export const INSERT_API_KEY = `${COMMON}
if redis.call('HEXISTS', P .. 'apikeys', ARGV[2]) == 1 then return { 'API_KEY_EXISTS' } end
redis.call('HSET', P .. 'apikeys', ARGV[2], ARGV[4])
redis.call('SADD', P .. 'tkeys:' .. ARGV[3], ARGV[2])
return { 'OK' }
`;

/** ARGV: P, id. Returns { 'OK', 1 | 0 }. */
export const DELETE_API_KEY = `${COMMON}
local raw = redis.call('HGET', P .. 'apikeys', ARGV[2])
if not raw then return { 'OK', 0 } end
local key = cjson.decode(raw)
redis.call('HDEL', P .. 'apikeys', ARGV[2])
if type(key.tenantId) == 'string' then redis.call('SREM', P .. 'tkeys:' .. key.tenantId, ARGV[2]) end
return { 'OK', 1 }
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
