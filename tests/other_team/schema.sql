-- A warehouse-robotics team's schema: nothing in it is named like the POS platform's.
-- Sites run robots from vendors; each site has a breaker on its vendor link.
CREATE TABLE sites (
    site_code      text PRIMARY KEY,
    site_label     text NOT NULL,
    vendor         text NOT NULL,
    link_up        boolean NOT NULL DEFAULT true,
    broken_since   timestamptz            -- the vendor link has failed since then (NULL: fine)
);

CREATE TABLE link_breakers (
    site_code   text PRIMARY KEY REFERENCES sites,
    phase       text NOT NULL DEFAULT 'closed',    -- closed | open | half_open
    errors      integer NOT NULL DEFAULT 0,
    trip_at     integer NOT NULL DEFAULT 8,
    flipped_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE outages (
    id         serial PRIMARY KEY,
    vendor     text NOT NULL,
    began      timestamptz NOT NULL,
    fixed      timestamptz
);

CREATE TABLE credential_swaps (
    id          serial PRIMARY KEY,
    old_key_fp  text NOT NULL,   -- first 16 hex digits of SHA-256 of the key that asked
    site_code   text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
