"""A local stand-in for the Kubeflow Pipelines API server (the v2beta1 endpoints kfp.Client uses for
experiments, runs and recurring runs). It keeps what it is sent and records every request; a real
cluster is the user's."""
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List

API = "/apis/v2beta1"


class FakeKfp:
    def __init__(self, max_page_size: int = 100):
        self.max_page_size = max_page_size  # a real server caps page_size too; lists past it come in pages
        self.requests: List[Dict[str, Any]] = []
        self.experiments: Dict[str, Dict[str, Any]] = {}
        self.runs: Dict[str, Dict[str, Any]] = {}
        self.recurring_runs: Dict[str, Dict[str, Any]] = {}
        self._ids = 0
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.host = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def new_id(self, kind: str) -> str:
        self._ids += 1
        return f"{kind}-{self._ids}"

    def calls(self) -> List[str]:
        """'METHOD /path' of every request, API prefix and query left out."""
        return [f"{r['method']} {r['path'][len(API):]}" for r in self.requests if r["path"].startswith(API)]

    def _page_bounds(self, query: Dict[str, List[str]]):
        start = int((query.get("page_token") or ["0"])[0] or 0)
        size = min(int((query.get("page_size") or [str(self.max_page_size)])[0]), self.max_page_size)
        return start, start + size

    def page(self, items: List[Any], query: Dict[str, List[str]]) -> List[Any]:
        start, end = self._page_bounds(query)
        return items[start:end]

    def next_page(self, items: List[Any], query: Dict[str, List[str]]) -> Dict[str, str]:
        """{'next_page_token': the offset of the next page}, or {} on the last page (as the server omits it)."""
        _, end = self._page_bounds(query)
        return {"next_page_token": str(end)} if end < len(items) else {}

    def handle(self, method: str, path: str, query: Dict[str, List[str]], body: Any):
        parts = path[len(API):].strip("/").split("/") if path.startswith(API) else []
        if parts == ["healthz"]:
            return 200, {"multi_user": False}
        if parts == ["experiments"] and method == "POST":
            experiment = {**body, "experiment_id": self.new_id("experiment")}
            self.experiments[experiment["experiment_id"]] = experiment
            return 200, experiment
        if parts == ["experiments"] and method == "GET":
            wanted = _display_name_filter(query)
            found = [e for e in self.experiments.values() if wanted is None or e["display_name"] == wanted]
            return 200, {"experiments": self.page(found, query), "total_size": len(found),
                         **self.next_page(found, query)}
        if parts == ["runs"] and method == "POST":
            run = {**body, "run_id": self.new_id("run"), "state": "PENDING"}
            self.runs[run["run_id"]] = run
            return 200, run
        if parts == ["recurringruns"] and method == "POST":
            cron = ((body.get("trigger") or {}).get("cron_schedule") or {}).get("cron")
            refused = cron_error(cron) if cron is not None else None
            if refused:  # the API server's answer (backend/src/apiserver/server/api_converter.go)
                return 400, {"error": f"Schedule cron is not a supported format(https://godoc.org/github.com/robfig/"
                                      f"cron). Error: {refused}", "code": 3}
            run = {**body, "recurring_run_id": self.new_id("recurring"), "status": "ENABLED"}
            self.recurring_runs[run["recurring_run_id"]] = run
            return 200, run
        if parts == ["recurringruns"] and method == "GET":
            experiment = (query.get("experiment_id") or [None])[0]
            found = [r for r in self.recurring_runs.values() if experiment in (None, r.get("experiment_id"))]
            return 200, {"recurringRuns": self.page(found, query), "total_size": len(found),
                         **self.next_page(found, query)}
        if len(parts) == 2 and parts[0] == "recurringruns" and method == "DELETE":
            if self.recurring_runs.pop(parts[1], None) is None:
                return 404, {"error": f"recurring run {parts[1]} not found", "code": 5}
            return 200, {}
        return 404, {"error": f"{method} {path} is not an endpoint of this fake", "code": 5}


def cron_error(cron: str):
    """Why robfig/cron v1.2.0's Parse, which KFP uses, refuses the expression; None if it takes it.
    Its fields: second, minute, hour, day of month, month, and an optional day of week; or a descriptor."""
    from croniter import croniter
    if cron.startswith("@"):
        return None if cron in ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly") \
            or cron.startswith("@every ") else f"Unrecognized descriptor: {cron}"
    fields = cron.split()
    if len(fields) not in (5, 6):
        return f"Expected 5 to 6 fields, found {len(fields)}: {cron}"
    six = " ".join(fields + ["*"] * (6 - len(fields)))
    return None if croniter.is_valid(six, second_at_beginning=True) else f"invalid field in {cron!r}"


def _display_name_filter(query: Dict[str, List[str]]):
    for raw in query.get("filter", []):
        for predicate in json.loads(raw).get("predicates", []):
            if predicate.get("key") in ("display_name", "name"):
                return predicate.get("string_value") or predicate.get("stringValue")
    return None


class _Handler(BaseHTTPRequestHandler):
    fake: FakeKfp

    def _serve(self, method: str) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        query = urllib.parse.parse_qs(url.query)
        self.fake.requests.append({"method": method, "path": url.path, "query": query, "body": body,
                                   "headers": dict(self.headers)})
        status, answer = self.fake.handle(method, url.path, query, body)
        payload = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):  # noqa: N802
        self._serve("GET")

    def do_POST(self):  # noqa: N802
        self._serve("POST")

    def do_DELETE(self):  # noqa: N802
        self._serve("DELETE")

    def log_message(self, *args):  # quiet
        pass
