-- Make a password hash for the `authenticate` transform's users:
--
--   printf '%s' 'the password' | shotover lua tools/hash-password.lua [ITER]
--
-- The password is read from standard input (one line; a final newline is
-- dropped), never from the command line, where `ps` and the shell's
-- history would keep it.  ITER: PBKDF2 iterations (default 100000).
-- Prints "pbkdf2-sha256$ITER$SALT$HASH".
local password = require "shotover.password"

local iter = tonumber(arg and arg[1] or nil) or password.DEFAULT_ITERATIONS
if iter < password.MIN_ITERATIONS then
    io.stderr:write("hash-password: at least ", password.MIN_ITERATIONS,
                    " iterations\n")
    os.exit(2)
end
local pw = io.read("*l")
if pw == nil or pw == "" then
    io.stderr:write("hash-password: give the password on standard input\n")
    os.exit(2)
end
print(password.hash(pw, iter))
