"""Store URLs: redaction before anything is printed or logged, sqlite paths, a reachability probe, and the check that
with an http(s) tracking URI every artifact goes through the server (mlflow-artifacts:/…).

A server started with --no-serve-artifacts or --default-artifact-root /path, or an experiment first created by a
local run, would have each worker write its figures, tables and models to its own disk while the server points at
files nobody else can read: such a store is refused before anything is recorded.
"""

from __future__ import annotations

import base64
import re
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qsl, unquote, unquote_plus, urlparse, urlsplit, urlunsplit

from pipeline.errors import UserError

# Query parameters that carry credentials in SQLAlchemy, libpq and HTTP URLs.
SECRET_PARAM = re.compile(r"pass|pwd|secret|token|key|auth|cred|signature", re.I)
_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@", re.I)
# A credential parameter inside a URL in text; a value already *** keeps the punctuation after it (a second
# pass over a message that holds a redacted URL must not eat its "; run ...").
_PARAM = re.compile(r"(?P<name>[?&][\w.-]*(?:pass|pwd|secret|token|key|auth|cred|signature)[\w.-]*)="
                    r"(?P<value>\*\*\*(?=[;,.)\]]*(?:[&\s'\"]|$))|[^&\s'\"]+)", re.I)


def redact(url: str) -> str:
    """The URL with its password and any credential-like query parameter replaced by ***: safe to print."""
    if not secrets_of(url):
        return url
    # Only the secrets change, in place: urlunsplit would turn sqlite:////abs/x.db into sqlite://abs/x.db.
    parts = urlsplit(url)
    base, mark, rest = url.partition("?")
    if parts.password:
        userinfo, _, host = parts.netloc.rpartition("@")
        base = base.replace(parts.netloc, f"{userinfo.partition(':')[0]}:***@{host}", 1)
    query, hash_, fragment = rest.partition("#")
    pairs = (item.partition("=") for item in query.split("&"))
    query = "&".join(k + eq + ("***" if v and SECRET_PARAM.search(unquote_plus(k)) else v) for k, eq, v in pairs)
    return base + mark + query + hash_ + fragment


def redact_text(text: str) -> str:
    """Every URL password and credential parameter inside free text (error messages, logs) replaced by ***."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _PARAM.sub(lambda m: f"{m['name']}=***", text)


def secrets_of(url: str) -> list[str]:
    """The secret strings in a URL (its password, credential parameters), to scrub from any output."""
    try:
        parts = urlsplit(url)
        found = [parts.password] if parts.password else []
    except ValueError:
        return []
    return found + [v for k, v in parse_qsl(parts.query) if SECRET_PARAM.search(k) and v]


def sqlite_path(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI, else None."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :].split("?", 1)[0])


def absolute_uri(uri: str) -> str:
    """sqlite:///relative.db → sqlite:////abs/relative.db. MLflow caches stores by URI string, so a
    relative one would keep pointing at the folder it was first opened from."""
    db = sqlite_path(uri)
    if db is None:
        return uri
    query = uri.partition("?")[2]
    return f"sqlite:///{db.resolve()}" + (f"?{query}" if query else "")


def is_http(uri: str) -> bool:
    return urlparse(uri).scheme in ("http", "https")


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when an HTTP tracking server does not answer (MLflow would retry for minutes).

    Asks a real API route, not /health: a server started without this host in --allowed-hosts answers
    /health but refuses the API.
    """
    if not is_http(uri):
        return
    shown = redact(uri)
    probe, headers = without_userinfo(uri)
    probe = probe.rstrip("/") + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=hpsearch-probe"
    try:
        urllib.request.urlopen(urllib.request.Request(probe, headers=headers), timeout=timeout).close()
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            raise UserError(f"MLflow tracking server {shown} refused the request (HTTP {e.code}); check its "
                            "--allowed-hosts and credentials") from None
        if e.code >= 500 or e.code == 404 and "RESOURCE_DOES_NOT_EXIST" not in e.read().decode(errors="replace"):
            raise UserError(f"{shown} does not answer like an MLflow tracking server (HTTP {e.code})") from None
    except (urllib.error.URLError, OSError) as e:
        reason = redact_text(str(getattr(e, "reason", e)))
        raise UserError(
            f"MLflow tracking server {shown} is unreachable ({reason}); start it or fix --tracking-uri"
        ) from None


SERVED = "mlflow-artifacts:"
HOW = ("start the server with `mlflow server --backend-store-uri … --artifacts-destination DIR` (artifacts served, "
       "without --default-artifact-root or --no-serve-artifacts)")


def check_artifacts_served(uri: str, timeout: float = 10.0) -> None:
    """Before an experiment is created on a server: the server must serve artifacts (it answers 503 otherwise)."""
    if not is_http(uri):
        return
    probe, headers = without_userinfo(uri)
    try:
        urllib.request.urlopen(urllib.request.Request(probe.rstrip("/") + "/api/2.0/mlflow-artifacts/artifacts",
                                                      headers=headers), timeout=timeout).close()
    except urllib.error.HTTPError as e:
        if e.code == 503:
            raise UserError(f"MLflow tracking server {redact(uri)} does not serve artifacts, so each worker would "
                            f"keep its own on its own disk; {HOW}") from None
    except (urllib.error.URLError, OSError):
        pass  # unreachable: the tracking client says so in its own words


def check_artifact_location(uri: str, experiment: str, location: str) -> None:
    """The experiment's artifacts must go through the server."""
    if is_http(uri) and not location.startswith(SERVED):
        raise UserError(f"experiment {experiment!r} on {redact(uri)} keeps its artifacts at {redact(location)}, not "
                        f"through the server ({SERVED}/…), so each worker would write to its own disk; {HOW}, "
                        "and use an experiment created through it (another --experiment)")


def without_userinfo(uri: str) -> tuple[str, dict]:
    """urllib takes user:password@ for part of the host name; send them as Basic auth, as MLflow's client does."""
    parts = urlsplit(uri)
    if parts.username is None:
        return uri, {}
    token = base64.b64encode(f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()).decode()
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])), {"Authorization": f"Basic {token}"}
