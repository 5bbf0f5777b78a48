# -*- coding: utf-8 -*-
# The rules the rpi-cluster workstation tools apply to what an agent reports
# (agent/apitypes and internal/toolkit in the Go tree), for the collection's
# inventory plugin and modules. Keep them in step with the Go side: the
# collection's tests compare this plugin's inventory with rpi-inventory's.

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ipaddress
import re
import unicodedata

from urllib.parse import urlsplit

STATUSES = ("alive", "suspect", "failed", "left")
RESERVED_GROUPS = frozenset(("all", "ungrouped") + STATUSES)
RESERVED_NODE_NAMES = frozenset(("all", "ungrouped", "localhost") + STATUSES)
SERVICE_GROUP_PREFIX = "service_"
DEFAULT_HTTP_PORT = 8080

_NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
_SERVICE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")


def quote(s):
    """Go's strconv.QuoteToGraphic: s in double quotes, every character a
    terminal could take for a command escaped."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif _graphic(ch):
            out.append(ch)
        elif ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif o < 0x80:
            out.append("\\x%02x" % o)
        elif o < 0x10000:
            out.append("\\u%04x" % o)
        else:
            out.append("\\U%08x" % o)
    out.append('"')
    return "".join(out)


_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def _graphic(ch):
    # Go's unicode.IsGraphic: letters, marks, numbers, punctuation, symbols
    # and the space separators (Zs).
    cat = unicodedata.category(ch)
    return cat[0] in "LMNPS" or cat == "Zs"


def printable(s):
    """s unchanged when it holds no control, format or invisible character,
    else quote(s): the form for text from the cluster that a person reads."""
    if not isinstance(s, str):
        return s
    for ch in s:
        if not _graphic(ch) and ch != " ":
            return quote(s)
    return s


def short(s):
    """quote(s), cut short when s is longer than any valid name."""
    if len(s) <= 64:
        return quote(s)
    return "%s... (%d characters)" % (quote(s[:40]), len(s))


def node_name_error(name):
    """What is wrong with a node name, or None (apitypes.ValidateNodeName)."""
    if not isinstance(name, str) or name == "":
        return "invalid node name: empty"
    if len(name) > 63:
        return "invalid node name %s...: %d characters, at most 63 allowed" % (quote(name[:20]), len(name))
    if not _NODE_NAME.fullmatch(name):
        return "invalid node name %s: use letters, digits, '_', '.', '-', starting with a letter or digit" % quote(name)
    if name.lower() in RESERVED_NODE_NAMES:
        return "invalid node name %s: reserved for a group of the inventory; pick another" % quote(name)
    return None


def service_name_error(name):
    """What is wrong with a service name, or None (apitypes.ValidateServiceName)."""
    if not isinstance(name, str) or name == "":
        return "invalid service name: empty"
    if len(name) > 63:
        return "invalid service name %s...: %d characters, at most 63 allowed" % (quote(name[:20]), len(name))
    if not _SERVICE_NAME.fullmatch(name):
        return ("invalid service name %s: use lowercase letters, digits, '_', '.', '-', "
                "starting with a letter or digit" % quote(name))
    return None


def node_error(node):
    """toolkit.CheckNode: the node's name, address and services."""
    err = node_name_error(node.get("name"))
    if err:
        return err
    addr = node.get("address")
    if not _plain_ip(addr):
        return "address %s is not an IP address" % quote(str(addr))
    services = node.get("services") or []
    if not isinstance(services, list):
        return "services are not a list"
    for s in services:
        err = service_name_error(s)
        if err:
            return err
    return None


def _plain_ip(addr):
    if not isinstance(addr, str) or "%" in addr:
        return False
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        return False
    return True


def group_name(service):
    """toolkit.GroupName: the inventory group of a service."""
    out = []
    for ch in service:
        if "a" <= ch <= "z" or "0" <= ch <= "9" or ch == "_":
            out.append(ch)
        elif "A" <= ch <= "Z":
            out.append(ch.lower())
        else:
            out.append("_")
    g = "".join(out)
    if g == "" or g in RESERVED_GROUPS or g[0].isdigit():
        g = SERVICE_GROUP_PREFIX + g
    return g


def normalize_url(base):
    """client.NormalizeURL: "host", "host:port" or a URL to a base URL."""
    base = (base or "").strip()
    if not base:
        raise ValueError("empty agent address")
    if "://" not in base:
        base = "http://" + base
    u = urlsplit(base)
    if u.scheme not in ("http", "https"):
        raise ValueError("agent address %s: scheme must be http or https" % quote(base))
    if not u.hostname:
        raise ValueError("agent address %s: no host" % quote(base))
    try:
        port = u.port
    except ValueError:
        raise ValueError("agent address %s: bad port" % quote(base))
    netloc = u.netloc.rsplit("@", 1)[-1]
    if port is None:
        host = u.hostname
        netloc = "[%s]:%d" % (host, DEFAULT_HTTP_PORT) if ":" in host else "%s:%d" % (host, DEFAULT_HTTP_PORT)
    return (u.scheme + "://" + netloc + u.path).rstrip("/")


def split_list(values):
    """toolkit.SplitList: comma-separated values flattened, empty ones dropped."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out = []
    for v in values:
        out.extend(p.strip() for p in str(v).split(",") if p.strip())
    return out


PURPOSE_RECORD = b"rpi-cluster record v1"


def fingerprint(pub):
    """identity.Fingerprint: SHA256:<unpadded base64 of the key's SHA-256>."""
    import base64
    import hashlib
    return "SHA256:" + base64.b64encode(hashlib.sha256(pub).digest()).decode("ascii").rstrip("=")


def verify_record(node):
    """toolkit.VerifyRecord: open the node's signed record (its ed25519
    signature against the key it carries) and check it names the node and
    gives its address. Returns (public key bytes, None), (None, None) for a
    node without a record, or (None, what is wrong)."""
    import base64
    import json as _json

    rec = node.get("signed_record")
    if not rec:
        return None, None
    try:
        body = base64.b64decode(rec.get("body") or "", validate=True)
        sig = base64.b64decode(rec.get("sig") or "", validate=True)
        claims = _json.loads(body.decode("utf-8"))
        pub = base64.b64decode(claims.get("pk") or "", validate=True)
    except Exception as e:  # any malformed part: the record does not open
        return None, "its signed record does not verify (open signed record: %s)" % e
    if not isinstance(claims, dict):
        return None, "its signed record does not verify (not an object)"
    if len(pub) != 32:
        return None, "its signed record does not verify (open signed record of %s: no identity key)" % quote(str(claims.get("n", "")))
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    except ImportError:
        raise RuntimeError("checking signed node records needs the Python package cryptography "
                           "(apt-get install python3-cryptography, or pip install cryptography)")
    try:
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, PURPOSE_RECORD + b"\x00" + body)
    except (InvalidSignature, ValueError):
        return None, "its signed record does not verify (open signed record of %s: bad signature)" % quote(str(claims.get("n", "")))
    if claims.get("n") != node.get("name"):
        return None, "its signed record is of node %s" % quote(str(claims.get("n", "")))
    if not _same_addr(claims.get("a"), node.get("address")):
        return None, "its signed record gives address %s, the agent %s" % (quote(str(claims.get("a", ""))), quote(str(node.get("address", ""))))
    return pub, None


def _same_addr(a, b):
    try:
        pa, pb = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except (TypeError, ValueError):
        return a == b
    if isinstance(pa, ipaddress.IPv6Address) and pa.ipv4_mapped:
        pa = pa.ipv4_mapped
    if isinstance(pb, ipaddress.IPv6Address) and pb.ipv4_mapped:
        pb = pb.ipv4_mapped
    return pa == pb
