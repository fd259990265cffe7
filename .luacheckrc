-- luacheck: one linter for every Lua file, enforced by `make check` in CI.
std = "lua54"
max_line_length = 140
files["spec/**/*.lua"] = { std = "+busted" }
files["spec/fixtures/**/*.lua"] = { std = "lua54" }
-- syntax_error.lua is broken on purpose: the CLI spec checks --check on it
exclude_files = { "build/**", "build-asan/**", "spec/fixtures/host/syntax_error.lua" }
