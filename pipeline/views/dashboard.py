"""`hpsearch dashboard`: optuna-dashboard on the project's study storage, bound to 127.0.0.1, until Ctrl-C.

The storage is the one every command opens (`Session.storage`: the journal file, or the database that --storage or
HPSEARCH_STORAGE names), handed to optuna-dashboard's WSGI application as an object, so its URL (which may hold a
password) never reaches an argv or a log; it is printed redacted. The server runs in this process, in threads of
wsgiref's server: Ctrl-C stops it and leaves nothing behind. optuna-dashboard is the optional extra `dashboard`.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from pipeline.errors import Terminated, UserError
from pipeline.tracking.links import UI_HOST as HOST

INSTALL = "hpsearch dashboard needs optuna-dashboard: pip install 'hpsearch[dashboard]'"


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a browser's open connection does not hold up Ctrl-C


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args) -> None:  # no line per request
        pass


def application(storage):
    """optuna-dashboard's WSGI application on an Optuna storage object."""
    try:
        import optuna_dashboard
    except ImportError:
        raise UserError(INSTALL) from None
    return optuna_dashboard.wsgi(storage)


def serve(session, port: int, echo: Callable[[str], None], open_browser: bool = False) -> None:
    """Serve the dashboard on 127.0.0.1:port until Ctrl-C or SIGTERM; returns after a clean stop."""
    app = application(session.storage)
    try:
        server = make_server(HOST, port, app, server_class=_Server, handler_class=_Quiet)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {HOST} is already in use; stop what uses it or pick another with "
                            "--port") from None
        raise UserError(f"cannot listen on {HOST}:{port} ({e.strerror}); pick another --port") from None
    url = f"http://{HOST}:{port}/dashboard/"
    names = ", ".join(s.study_name for s in _studies(session)) or "none yet"
    echo(f"optuna-dashboard: {url}")
    echo(f"  studies in {session.shown_storage}: {names}")
    echo("  Ctrl-C to stop")
    if open_browser:
        import webbrowser

        webbrowser.open(url)
    try:
        server.serve_forever()
    except (KeyboardInterrupt, Terminated):
        echo("stopping optuna-dashboard")
    finally:
        server.server_close()


def _studies(session) -> list:
    import optuna

    prefix = f"{session.experiment}-"
    return [s for s in optuna.get_all_study_summaries(session.storage, include_best_trial=False)
            if s.study_name.startswith(prefix)]
