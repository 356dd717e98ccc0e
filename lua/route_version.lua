-- The tenant's version of a service, without choosing an instance or touching
-- any selection state: for `/v1/verify`, whose proxy (nginx, Traefik) routes
-- to the version's own upstream itself. (After route_resolve.lua.)
-- Returns {version or false, why}.
local version, why = resolve()
return { version, why }
