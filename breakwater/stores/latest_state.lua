-- Vessels' latest state, atomic on the server: the rules of breakwater/write_model.py.
--
-- KEYS[1]        the GEO index of one bucket
-- KEYS[2]        the set of the bucket's vessels whose latest position the GEO index cannot
--                hold (|latitude| > 85.05112878)
-- KEYS[3..n+2]   the vessel hashes, one per update, all in the same bucket (same hash tag,
--                so the script also runs on Redis Cluster)
-- ARGV[1]        JSON array of updates: {kind, mmsi, received_ms, digest, lon, lat, {field, value, ...}}
--                kind "p" (position: always with a valid lon/lat) or "s" (static: lon/lat "")
--
-- Order: (received_ms, digest), greater is newer; the same report twice changes nothing.
-- A position replaces the vessel's position fields when it is newer than the position the
-- hash holds (pos_ms, pos_digest), whichever writer or retry sends it last.
-- A static report sets each field it carries when it is newer than the report that set that
-- field; static_ms/static_digest is the newest static report. A field set by the newest static
-- report carries that report's stamp implicitly; one set by an older report has its own
-- stamp beside it, "t:<field>" = "<ms>:<digest>" (class A vessels repeat every field in each
-- type 5, so most hashes hold no stamp at all).
-- Returns {MMSIs that changed, positions written but kept out of the GEO index}.

local GEO_MAX_LAT = 85.05112878
-- write_model.STATIC_VALUE_FIELDS, and their stamps
local STATIC_FIELDS = {'imo', 'callsign', 'name', 'ship_type', 'to_bow_m', 'to_stern_m', 'to_port_m',
  'to_starboard_m', 'eta', 'draught_m', 'destination'}
local STAMPED = {}
for k, f in ipairs(STATIC_FIELDS) do
  STAMPED[k] = f
  STAMPED[k + #STATIC_FIELDS] = 't:' .. f
end

local function newer(t, d, ct, cd)
  return ct == nil or t > ct or (t == ct and d > cd)
end

local function stamp_newer(t, d, stamp)
  if not stamp then return true end
  local ct, cd = string.match(stamp, '^(-?%d+):(-?%d+)$')
  return newer(t, d, tonumber(ct), tonumber(cd))
end

local updates = cjson.decode(ARGV[1])
local applied = {}
local off_index = 0
for i, u in ipairs(updates) do
  local key = KEYS[i + 2]
  local kind, mmsi, t, d = u[1], u[2], tonumber(u[3]), tonumber(u[4])
  local fields = u[7]
  if kind == 'p' then
    local cur = redis.call('HMGET', key, 'pos_ms', 'pos_digest')
    if newer(t, d, tonumber(cur[1]), tonumber(cur[2])) then
      redis.call('HSET', key, 'mmsi', mmsi, 'pos_ms', u[3], 'pos_digest', u[4], unpack(fields))
      if math.abs(tonumber(u[6])) <= GEO_MAX_LAT then
        redis.call('GEOADD', KEYS[1], u[5], u[6], mmsi)
        redis.call('SREM', KEYS[2], mmsi)
      else
        redis.call('ZREM', KEYS[1], mmsi)
        redis.call('SADD', KEYS[2], mmsi)
        off_index = off_index + 1
      end
      applied[#applied + 1] = mmsi
    end
  else
    local changed = false
    local cur = redis.call('HMGET', key, 'static_ms', 'static_digest')
    local st, sd = tonumber(cur[1]), tonumber(cur[2])
    local stamp = u[3] .. ':' .. u[4]
    local carried = {}
    for j = 1, #fields, 2 do carried[fields[j]] = true end
    if newer(t, d, st, sd) then
      if st ~= nil then
        -- The fields the previous newest report set carry its stamp implicitly; those this
        -- report does not replace keep that stamp explicitly from now on.
        local held = redis.call('HMGET', key, unpack(STAMPED))
        local old = cur[1] .. ':' .. cur[2]
        for k, f in ipairs(STATIC_FIELDS) do
          if not carried[f] and held[k] and not held[k + #STATIC_FIELDS] then
            redis.call('HSET', key, 't:' .. f, old)
          end
        end
      end
      redis.call('HSET', key, 'mmsi', mmsi, 'static_ms', u[3], 'static_digest', u[4], unpack(fields))
      for j = 1, #fields, 2 do redis.call('HDEL', key, 't:' .. fields[j]) end
      changed = true
    else
      -- Older than the newest static report: a field takes this value only when no report
      -- set it yet, or the report that did (its explicit stamp) is older still.
      for j = 1, #fields, 2 do
        local f = fields[j]
        local at = redis.call('HGET', key, 't:' .. f)
        local take
        if at then
          take = stamp_newer(t, d, at)
        else
          take = redis.call('HEXISTS', key, f) == 0
        end
        if take then
          redis.call('HSET', key, f, fields[j + 1], 't:' .. f, stamp)
          changed = true
        end
      end
    end
    if changed then applied[#applied + 1] = mmsi end
  end
end
return {applied, off_index}
