-- Portcullis ban check inside nginx (lua-nginx-module with LuaJIT).
--
-- nginx-bouncer --ban-file PATH keeps the live ban and captcha decisions in
-- PATH as a sorted table of disjoint address ranges (format: the doc comment
-- of enforcer/banfile in the Portcullis source). Every worker maps the file
-- read-only and binary-searches it through the FFI: no shared-dict lock, no
-- subrequest, and the memory is the file's pages, shared by all workers.
--
-- A new generation is written beside the old file and renamed over it; the
-- bouncer then sets the old file's "superseded" word, which this module
-- reads on every check and answers by mapping the new file. The bouncer also
-- refreshes a heartbeat in the file every second: a heartbeat older than
-- stale_after seconds means the bouncer is down, and the fail mode applies
-- (closed: 503; open: the last decisions keep applying until they expire).
--
-- Usage (see lua-http.conf, lua-server.conf, lua-fail-open.conf):
--   init_by_lua_block { require("portcullis").configure({ file = "/dev/shm/portcullis-nginx.bans" }) }
--   access_by_lua_block { require("portcullis").check("open") }

local ffi = require "ffi"
local bit = require "bit"

local C = ffi.C
local rshift = bit.rshift
local byte = string.byte
local ngx = ngx
local now_fn = ngx.now
local exit = ngx.exit
local is_internal = ngx.req.is_internal

local function cdef(s)
    -- Another module may have declared the same C functions already.
    pcall(ffi.cdef, s)
end
cdef [[int open(const char *pathname, int flags);]]
cdef [[int close(int fd);]]
cdef [[int64_t lseek(int fd, int64_t offset, int whence);]]
cdef [[void *mmap(void *addr, size_t length, int prot, int flags, int fd, int64_t offset);]]
cdef [[int munmap(void *addr, size_t length);]]
cdef [[
typedef struct {
    char magic[8];
    uint32_t version, header_size;
    volatile uint32_t superseded;
    uint32_t reserved1;
    uint64_t generation;
    volatile double heartbeat;
    double built;
    uint32_t n4, n6, nattr, index4, seg4, seg6, attrs, reserved2;
    uint64_t size;
} portcullis_bans_header;
]]

local MAGIC = "PCBANS\0\1"
local HEADER_SIZE = 128
local INDEX4_LEN = 65537
local O_RDONLY_CLOEXEC = 0x80000
local PROT_READ, MAP_SHARED, SEEK_END = 1, 1, 2
local MAP_FAILED = ffi.cast("void *", -1)

local header_t = ffi.typeof("const portcullis_bans_header *")
local u32p = ffi.typeof("const uint32_t *")
local f64p = ffi.typeof("const double *")
local u8p = ffi.typeof("const uint8_t *")

local M = {}

local conf = { file = "/dev/shm/portcullis-nginx.bans", stale_after = 5, retry = 1 }
local cur          -- the mapped table, nil when none
local next_try = 0 -- earliest time to try mapping again after a failure
local warned = {}  -- one log line per distinct problem

local function warn(msg)
    if not warned[msg] then
        warned[msg] = true
        ngx.log(ngx.ERR, "portcullis: ", msg)
    end
end

local function align8(n) return n + (8 - n % 8) % 8 end

-- map returns the table of the file at conf.file, or nil and a reason.
local function map()
    local fd = C.open(conf.file, O_RDONLY_CLOEXEC)
    if fd < 0 then
        return nil, "open " .. conf.file .. ": errno " .. ffi.errno()
    end
    local size = tonumber(C.lseek(fd, 0, SEEK_END))
    if size < HEADER_SIZE then
        C.close(fd)
        return nil, conf.file .. ": shorter than the header"
    end
    local p = C.mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0)
    C.close(fd)
    if p == MAP_FAILED then
        return nil, "mmap " .. conf.file .. ": errno " .. ffi.errno()
    end
    local t = { base = p, size = size, hdr = ffi.cast(header_t, p) }
    local function fail(why)
        C.munmap(p, size)
        return nil, conf.file .. ": " .. why
    end
    local h = t.hdr
    if ffi.string(h.magic, 8) ~= MAGIC then return fail("bad magic") end
    if h.version ~= 1 or h.header_size ~= HEADER_SIZE then return fail("unknown version") end
    if tonumber(h.size) ~= size then return fail("size field does not match the file") end
    local n4, n6, nattr = h.n4, h.n6, h.nattr
    local function within(off, len)
        return off >= HEADER_SIZE and off % 4 == 0 and off + len <= size
    end
    local u4off = align8(h.seg4 + 12 * n4)
    local u6off = align8(h.seg6 + 36 * n6)
    if not (within(h.index4, 4 * INDEX4_LEN) and h.seg4 % 8 == 0 and h.seg6 % 8 == 0
            and within(h.seg4, u4off - h.seg4 + 8 * n4) and within(h.seg6, u6off - h.seg6 + 8 * n6)
            and within(h.attrs, 12 * nattr)) then
        return fail("section outside the file")
    end
    if n6 >= 67108864 then return fail("more IPv6 segments than the search covers") end
    local b = ffi.cast(u8p, p)
    t.n4, t.n6, t.nattr = n4, n6, nattr
    t.idx = ffi.cast(u32p, b + h.index4)
    t.s4 = ffi.cast(u32p, b + h.seg4)
    t.e4 = t.s4 + n4
    t.a4 = t.s4 + 2 * n4
    t.u4 = ffi.cast(f64p, b + u4off)
    t.s6 = ffi.cast(u32p, b + h.seg6)
    t.e6 = t.s6 + 4 * n6
    t.a6 = t.s6 + 8 * n6
    t.u6 = ffi.cast(f64p, b + u6off)
    t.remedy, t.text = {}, {}
    local attrs = ffi.cast(u32p, b + h.attrs)
    for i = 0, nattr - 1 do
        local r, off, len = attrs[3 * i], attrs[3 * i + 1], attrs[3 * i + 2]
        if off + len > size or (r ~= 1 and r ~= 2) then return fail("bad attr " .. i) end
        t.remedy[i] = r
        t.text[i] = ffi.string(b + off, len)
    end
    return t
end

-- current returns the table to judge by, remapping after a new generation
-- (or after a failure, at most every conf.retry seconds).
local function current(now)
    local t = cur
    if t ~= nil and t.hdr.superseded == 0 then
        return t
    end
    if now < next_try then
        return t
    end
    local nt, err = map()
    if nt == nil then
        next_try = now + conf.retry
        warn(err)
        return t
    end
    if t ~= nil then
        C.munmap(t.base, t.size)
    end
    cur = nt
    return nt
end

-- The binary searches are unrolled: LuaJIT does not compile a loop into
-- the trace of the function around it ("inner loop in root trace"), which
-- would leave the whole check to the interpreter. Each step halves
-- [lo, hi) and costs one comparison once the range is empty; 17 steps
-- cover any /16 block of the IPv4 index (at most 65 536 segments) and 26
-- cover 64M IPv6 segments (map refuses a file with more).

-- step4 is one step of the search for the last start <= v.
local function step4(s4, lo, hi, v)
    if lo < hi then
        local m = rshift(lo + hi, 1)
        if s4[m] <= v then return m + 1, hi end
        return lo, m
    end
    return lo, hi
end

-- lookup4 returns the attr index of the live segment holding v, or nil.
local function lookup4(t, v, hi16, now)
    local idx = t.idx
    local lo, hi = idx[hi16], idx[hi16 + 1]
    local n4 = t.n4
    if hi > n4 then hi = n4 end
    if lo > hi then lo = hi end
    local s4 = t.s4
    lo, hi = step4(s4, lo, hi, v); lo, hi = step4(s4, lo, hi, v); lo, hi = step4(s4, lo, hi, v)
    lo, hi = step4(s4, lo, hi, v); lo, hi = step4(s4, lo, hi, v); lo, hi = step4(s4, lo, hi, v)
    lo, hi = step4(s4, lo, hi, v); lo, hi = step4(s4, lo, hi, v); lo, hi = step4(s4, lo, hi, v)
    lo, hi = step4(s4, lo, hi, v); lo, hi = step4(s4, lo, hi, v); lo, hi = step4(s4, lo, hi, v)
    lo, hi = step4(s4, lo, hi, v); lo, hi = step4(s4, lo, hi, v); lo, hi = step4(s4, lo, hi, v)
    lo, hi = step4(s4, lo, hi, v); lo, hi = step4(s4, lo, hi, v)
    local i = lo - 1
    if i < 0 or t.e4[i] < v or t.u4[i] <= now then
        return nil
    end
    return t.a4[i]
end

-- cmp6 compares the address in the four words at w with (a, b, c, d).
local function cmp6(w, a, b, c, d)
    local x = w[0]
    if x ~= a then return x < a and -1 or 1 end
    x = w[1]
    if x ~= b then return x < b and -1 or 1 end
    x = w[2]
    if x ~= c then return x < c and -1 or 1 end
    x = w[3]
    if x ~= d then return x < d and -1 or 1 end
    return 0
end

-- step6 is one step of the search for the last start <= (a, b, c, d).
local function step6(s6, lo, hi, a, b, c, d)
    if lo < hi then
        local m = rshift(lo + hi, 1)
        if cmp6(s6 + 4 * m, a, b, c, d) <= 0 then return m + 1, hi end
        return lo, m
    end
    return lo, hi
end

local function lookup6(t, a, b, c, d, now)
    local lo, hi = 0, t.n6
    local s6 = t.s6
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    lo, hi = step6(s6, lo, hi, a, b, c, d)
    local i = lo - 1
    if i < 0 or cmp6(t.e6 + 4 * i, a, b, c, d) < 0 or t.u6[i] <= now then
        return nil
    end
    return t.a6[i]
end

local function word(s, i)
    local b1, b2, b3, b4 = byte(s, i, i + 3)
    return ((b1 * 256 + b2) * 256 + b3) * 256 + b4
end

local function fail_closed()
    ngx.status = 503
    ngx.header["Content-Type"] = "text/plain"
    ngx.print("Service temporarily unavailable.\n")
    return exit(ngx.HTTP_OK)
end

-- configure sets the file and timings; call it from init_by_lua_block.
--   file        the bouncer's --ban-file (default /dev/shm/portcullis-nginx.bans)
--   stale_after seconds without a heartbeat before the bouncer counts as down (5)
--   retry       seconds between attempts to map a missing or bad file (1)
function M.configure(opts)
    for k, v in pairs(opts or {}) do
        if conf[k] == nil then
            error("portcullis.configure: unknown option " .. tostring(k))
        end
        conf[k] = v
    end
end

-- check judges the client ($binary_remote_addr, after real_ip) in the access
-- phase: a ban ends the request with 403 (error_page shows the ban page), a
-- captcha with 401 (error_page routes it to @portcullis_captcha), and
-- $portcullis_decision names the decision. fail_mode ("open" or "closed")
-- says what happens when there is no file or the bouncer is down.
-- Internal redirects (error pages, named locations) were judged before.
function M.check(fail_mode)
    if is_internal() then
        return
    end
    local now = now_fn()
    local t = current(now)
    if t == nil or now - t.hdr.heartbeat > conf.stale_after then
        if fail_mode == "closed" then
            return fail_closed()
        end
        if t == nil then
            return
        end
    end
    local a = ngx.var.binary_remote_addr
    local attr
    if #a == 4 then
        local b1, b2, b3, b4 = byte(a, 1, 4)
        local hi16 = b1 * 256 + b2
        attr = lookup4(t, (hi16 * 256 + b3) * 256 + b4, hi16, now)
    elseif #a == 16 then
        local w1, w2, w3 = word(a, 1), word(a, 5), word(a, 9)
        if w1 == 0 and w2 == 0 and w3 == 0xffff then
            local b13, b14 = byte(a, 13, 14)
            attr = lookup4(t, word(a, 13), b13 * 256 + b14, now)
        else
            attr = lookup6(t, w1, w2, w3, word(a, 13), now)
        end
    else
        return
    end
    if attr == nil then
        return
    end
    local r = t.remedy[attr]
    if r == nil then
        return
    end
    ngx.var.portcullis_decision = t.text[attr]
    if r == 1 then
        return exit(403)
    end
    return exit(401)
end

return M
