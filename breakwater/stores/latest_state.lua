-- Newer-wins update of vessels' latest state, atomic on the server.
--
-- KEYS[1]        the GEO index of one bucket
-- KEYS[2..n+1]   the vessel hashes, one per update, all in the same bucket (same hash tag,
--                so the script also runs on Redis Cluster)
-- ARGV[1]        JSON array of updates: {kind, mmsi, received_ms, digest, lon, lat, {field, value, ...}}
--                kind "p" (position) or "s" (static); lon/lat "" when not available
--
-- A position replaces the vessel's position fields only when (received_ms, digest) is newer
-- than what the hash holds; an older one changes nothing, whichever writer or retry sends
-- it last. A static report sets its non-empty fields when it is at least as new as the
-- vessel's static data, and only fills missing fields when it is older.
-- Returns the MMSIs that changed, for the optional update stream.

local updates = cjson.decode(ARGV[1])
local applied = {}
for i, u in ipairs(updates) do
  local key = KEYS[i + 1]
  local kind, mmsi, t, d = u[1], u[2], tonumber(u[3]), tonumber(u[4])
  local tf, df = 'pos_ms', 'pos_digest'
  if kind == 's' then tf, df = 'static_ms', 'static_digest' end
  local cur = redis.call('HMGET', key, tf, df)
  local ct, cd = tonumber(cur[1]), tonumber(cur[2])
  local newer = ct == nil or t > ct or (t == ct and d > cd)
  local fields = u[7]
  if kind == 'p' then
    if newer then
      redis.call('HSET', key, 'mmsi', mmsi, tf, u[3], df, u[4], unpack(fields))
      if u[5] ~= '' and u[6] ~= '' then
        redis.call('GEOADD', KEYS[1], u[5], u[6], mmsi)
      else
        redis.call('ZREM', KEYS[1], mmsi)
      end
      applied[#applied + 1] = mmsi
    end
  else
    local changed = false
    if newer then
      redis.call('HSET', key, 'mmsi', mmsi, tf, u[3], df, u[4])
      changed = true
    end
    for j = 1, #fields, 2 do
      if newer then
        redis.call('HSET', key, fields[j], fields[j + 1])
      elseif redis.call('HSETNX', key, fields[j], fields[j + 1]) == 1 then
        changed = true
      end
    end
    if changed then applied[#applied + 1] = mmsi end
  end
end
return applied
