-- Field-level encryption in front of Cassandra: the card number and notes
-- of shop.customers are stored encrypted (AES-256-GCM envelopes under a
-- key-encryption key from a file); the application reads and writes them
-- in plaintext through shotover.  Walkthrough:
-- examples/cassandra-encryption/README.md.
--
-- SHOTOVER_EXAMPLE_LISTEN, _CASSANDRA, _KEK_FILE and _KEK_ID move the
-- listener, the node and the key; _OLD_KEK_ID with _OLD_KEK_FILE keeps a
-- rotated-out key readable (the integration spec runs this file that
-- way on free ports).
local function at(name, default)
    return os.getenv("SHOTOVER_EXAMPLE_" .. name) or default
end

local old = {}
if at("OLD_KEK_ID") then
    old[at("OLD_KEK_ID")] = at("OLD_KEK_FILE")
end

return {
    sources = {
        { name = "cql", protocol = "cassandra",
          listen = at("LISTEN", "127.0.0.1:9043"),
          chain = {
              { "protect",
                columns = { "shop.customers.card_number",
                            "shop.customers.notes" },
                key_manager = {
                    "local",
                    -- a demo key: make your own (README) and keep it
                    -- readable by shotover only
                    kek_file = at("KEK_FILE",
                                  "examples/cassandra-encryption/demo.kek"),
                    kek_id = at("KEK_ID", "demo-1"),
                    old_kek_files = old,
                } },
              { "cassandra", remote = at("CASSANDRA", "127.0.0.1:9042") },
          } },
    },
}
