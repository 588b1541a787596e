#!/usr/bin/env python3
"""Zero-dependency CQL client (native protocol v4) for health checks and small scripts.

    cqlping.py [-H HOST] [-p PORT] [--cl QUORUM] [--serial SERIAL] [-t SECONDS] [-q] [CQL ...]

With no CQL it runs `SELECT release_version FROM system.local`. Each CQL argument is sent as
one QUERY on one connection, in order. Rows are printed one per line as `col=value, ...`.
After a schema change it waits (up to the timeout) until the live nodes agree on the schema.

Exit status: 0 all statements succeeded; 1 the server answered with an error (printed as
`ERROR 0x<code> <message>`); 2 no connection / protocol failure / timeout.
"""
import argparse
import ipaddress
import socket
import struct
import sys
import time
import uuid

CONSISTENCY = {
    "ANY": 0, "ONE": 1, "TWO": 2, "THREE": 3, "QUORUM": 4, "ALL": 5, "LOCAL_QUORUM": 6,
    "EACH_QUORUM": 7, "SERIAL": 8, "LOCAL_SERIAL": 9, "LOCAL_ONE": 10,
}
OP_ERROR, OP_STARTUP, OP_READY, OP_AUTHENTICATE, OP_QUERY, OP_RESULT = 0x00, 0x01, 0x02, 0x03, 0x07, 0x08
ERROR_NAMES = {
    0x0000: "ServerError", 0x000A: "ProtocolError", 0x0100: "BadCredentials", 0x1000: "Unavailable",
    0x1001: "Overloaded", 0x1002: "IsBootstrapping", 0x1003: "TruncateError", 0x1100: "WriteTimeout",
    0x1200: "ReadTimeout", 0x1300: "ReadFailure", 0x1400: "FunctionFailure", 0x1500: "WriteFailure",
    0x1600: "CDCWriteFailure", 0x1700: "CASWriteUnknown", 0x2000: "SyntaxError", 0x2100: "Unauthorized",
    0x2200: "Invalid", 0x2300: "ConfigError", 0x2400: "AlreadyExists", 0x2500: "Unprepared",
}


class CqlError(Exception):
    def __init__(self, code, message):
        super().__init__(f"ERROR 0x{code:04x} {ERROR_NAMES.get(code, '?')}: {message}")
        self.code = code


class Reader:
    def __init__(self, data):
        self.d, self.i = data, 0

    def take(self, n):
        if n < 0 or self.i + n > len(self.d):
            raise ValueError("truncated frame body")
        b = self.d[self.i:self.i + n]
        self.i += n
        return b

    def byte(self):
        return self.take(1)[0]

    def short(self):
        return struct.unpack(">H", self.take(2))[0]

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def string(self):
        return self.take(self.short()).decode("utf-8", "replace")

    def bytes(self):
        n = self.int()
        return None if n < 0 else self.take(n)

    def option(self):
        t = self.short()
        if t == 0x0000:
            return ("custom", self.string())
        if t in (0x0020, 0x0022):
            return (t, self.option())
        if t == 0x0021:
            return (t, self.option(), self.option())
        if t == 0x0030:
            self.string(), self.string()
            return (t, [(self.string(), self.option()) for _ in range(self.short())])
        if t == 0x0031:
            return (t, [self.option() for _ in range(self.short())])
        return (t,)


def decode(typ, b):
    if b is None:
        return None
    t = typ[0]
    if t in (0x0001, 0x000D):
        return b.decode("utf-8", "replace")
    if t in (0x0002, 0x0005, 0x000B):
        return struct.unpack(">q", b)[0]
    if t == 0x0009:
        return struct.unpack(">i", b)[0]
    if t == 0x0013:
        return struct.unpack(">h", b)[0]
    if t == 0x0014:
        return struct.unpack(">b", b)[0]
    if t == 0x0004:
        return b != b"\x00"
    if t == 0x0007:
        return struct.unpack(">d", b)[0]
    if t == 0x0008:
        return struct.unpack(">f", b)[0]
    if t in (0x000C, 0x000F):
        return str(uuid.UUID(bytes=b))
    if t == 0x0010:
        return str(ipaddress.ip_address(b))
    if t == 0x000E:
        return int.from_bytes(b, "big", signed=True)
    if t in (0x0020, 0x0022, 0x0021):
        r = Reader(b)
        n = r.int()
        if t == 0x0021:
            return {decode(typ[1], r.bytes()): decode(typ[2], r.bytes()) for _ in range(n)}
        return [decode(typ[1], r.bytes()) for _ in range(n)]
    if t == 0x0031:
        r = Reader(b)
        return tuple(decode(et, r.bytes()) for et in typ[1])
    if t == 0x0030:
        r = Reader(b)
        out = {}
        for name, ft in typ[1]:
            if r.i >= len(b):
                break
            out[name] = decode(ft, r.bytes())
        return out
    return "0x" + b.hex()


class Connection:
    def __init__(self, host, port, timeout):
        self.deadline = time.monotonic() + timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.stream = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("timed out waiting for the server")
            self.sock.settimeout(left)
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("server closed the connection")
            buf += chunk
        return buf

    def request(self, opcode, body):
        self.stream = (self.stream + 1) % 32768
        self.sock.sendall(struct.pack(">BBhBi", 0x04, 0, self.stream, opcode, len(body)) + body)
        while True:
            version, _flags, stream, op, length = struct.unpack(">BBhBi", self._recv_exact(9))
            if version & 0x7F != 0x04:
                raise ConnectionError(f"unexpected protocol version 0x{version:02x}")
            body = self._recv_exact(length)
            if stream != self.stream:
                continue  # an event or a stale reply
            if op == OP_ERROR:
                r = Reader(body)
                code, msg = r.int(), r.string()
                cl_name = {v: k for k, v in CONSISTENCY.items()}
                try:
                    if code == 0x1000:
                        cl, required, alive = r.short(), r.int(), r.int()
                        msg += f" [cl={cl_name.get(cl, cl)} required={required} alive={alive}]"
                    elif code == 0x1100:
                        cl, received, block_for, wtype = r.short(), r.int(), r.int(), r.string()
                        msg += f" [cl={cl_name.get(cl, cl)} received={received} block_for={block_for} write_type={wtype}]"
                    elif code == 0x1200:
                        cl, received, block_for, present = r.short(), r.int(), r.int(), r.byte()
                        msg += f" [cl={cl_name.get(cl, cl)} received={received} block_for={block_for} data_present={bool(present)}]"
                except ValueError:
                    pass
                raise CqlError(code, msg)
            return op, Reader(body)

    def startup(self):
        pairs = {"CQL_VERSION": "3.0.0"}
        body = struct.pack(">H", len(pairs))
        for k, v in pairs.items():
            for s in (k, v):
                e = s.encode()
                body += struct.pack(">H", len(e)) + e
        op, _ = self.request(OP_STARTUP, body)
        if op == OP_AUTHENTICATE:
            raise CqlError(0x0100, "server requires authentication (not supported here)")
        if op != OP_READY:
            raise ConnectionError(f"unexpected reply 0x{op:02x} to STARTUP")

    def query(self, cql, consistency="ONE", serial=None):
        q = cql.encode()
        body = struct.pack(">i", len(q)) + q + struct.pack(">H", CONSISTENCY[consistency.upper()])
        if serial:
            body += struct.pack(">BH", 0x10, CONSISTENCY[serial.upper()])
        else:
            body += b"\x00"
        op, r = self.request(OP_QUERY, body)
        if op != OP_RESULT:
            raise ConnectionError(f"unexpected reply 0x{op:02x} to QUERY")
        kind = r.int()
        if kind == 0x0001:
            return ("void", None)
        if kind == 0x0003:
            return ("set_keyspace", r.string())
        if kind == 0x0005:
            change, target = r.string(), r.string()
            what = r.string()
            if target != "KEYSPACE":
                what += "." + r.string()
            return ("schema_change", f"{change} {target} {what}")
        if kind != 0x0002:
            return ("result_kind", kind)
        flags, ncols = r.int(), r.int()
        if flags & 0x0002:
            r.bytes()  # paging state
        cols = []
        if not flags & 0x0004:
            global_spec = flags & 0x0001
            if global_spec:
                r.string(), r.string()
            for _ in range(ncols):
                if not global_spec:
                    r.string(), r.string()
                cols.append((r.string(), r.option()))
        rows = []
        for _ in range(r.int()):
            rows.append([(name, decode(typ, r.bytes())) for name, typ in cols])
        return ("rows", rows)

    def wait_schema_agreement(self):
        while time.monotonic() < self.deadline:
            local = self.query("SELECT schema_version FROM system.local WHERE key='local'")[1]
            peers = self.query("SELECT peer, schema_version FROM system.peers")[1]
            versions = {str(local[0][0][1])} | {str(p[1][1]) for p in peers if p[1][1] is not None}
            if len(versions) == 1:
                return True
            time.sleep(0.2)
        return False


def fmt(v):
    return "null" if v is None else str(v)


def main(argv=None):
    ap = argparse.ArgumentParser(add_help=False, description=__doc__.split("\n\n")[0])
    ap.add_argument("--help", action="help")
    ap.add_argument("-H", "--host", default="127.0.0.1")
    ap.add_argument("-p", "--port", type=int, default=9042)
    ap.add_argument("--cl", default="ONE", help="consistency level (default ONE)")
    ap.add_argument("--serial", default=None, help="serial consistency for LWTs (SERIAL/LOCAL_SERIAL)")
    ap.add_argument("-t", "--timeout", type=float, default=10.0)
    ap.add_argument("-q", "--quiet", action="store_true", help="print nothing, exit status only")
    ap.add_argument("--no-schema-wait", action="store_true")
    ap.add_argument("cql", nargs="*")
    a = ap.parse_args(argv)
    if a.cl.upper() not in CONSISTENCY or (a.serial and a.serial.upper() not in CONSISTENCY):
        ap.error("unknown consistency level")
    statements = a.cql or ["SELECT release_version FROM system.local WHERE key='local'"]
    out = (lambda *_, **__: None) if a.quiet else print
    try:
        conn = Connection(a.host, a.port, a.timeout)
    except OSError as e:
        out(f"NOCONN {a.host}:{a.port}: {e}", file=sys.stderr)
        return 2
    try:
        conn.startup()
        for cql in statements:
            kind, res = conn.query(cql, a.cl, a.serial)
            if kind == "rows":
                for row in res:
                    out(", ".join(f"{n}={fmt(v)}" for n, v in row))
                if not res:
                    out("(0 rows)")
            elif kind == "schema_change":
                agreed = True if a.no_schema_wait else conn.wait_schema_agreement()
                out(f"SCHEMA_CHANGE {res}" + ("" if agreed else " (schema agreement not reached)"))
            elif kind == "void":
                out("OK")
            else:
                out(f"{kind.upper()} {res}")
        return 0
    except CqlError as e:
        out(str(e), file=sys.stderr)
        return 1
    except (OSError, ValueError, ConnectionError, struct.error) as e:
        out(f"FAILED {a.host}:{a.port}: {type(e).__name__}: {e}", file=sys.stderr)
        return 2
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
