#!/usr/bin/env python3
"""A small OTLP/HTTP trace receiver, and a check of the entry trace it received.

    otlp-receiver.py serve SPANS.jsonl [--port PORT]
        Accepts POST /v1/traces (application/x-protobuf, ExportTraceServiceRequest) and
        appends one JSON line per span to SPANS.jsonl: trace_id, span_id, parent_span_id
        (hex, "" for a root), name, service, attributes, links. Prints "listening on PORT"
        once ready (PORT 0, the default, picks a free one). Used by the process test
        (crates/cashflow/tests/process.rs), the benchmark's traced runs and the worked example
        in docs/observability.md.

    otlp-receiver.py check SPANS.jsonl TRACE_ID REQUEST_SPAN_ID
        Checks the chain of one recorded entry: the request's server span REQUEST_SPAN_ID
        (the span the response's traceparent names) is in trace TRACE_ID; `ledger.record` is its
        child; the consumer's `consolidation.apply` is its child too (through the outbox and the
        queue); every span of the trace has its parent in the trace, except the request's span.
        Exits 1 naming what is missing.

Needs PyPI's opentelemetry-proto (`pip install opentelemetry-proto`), which .ci/run installs.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


def value_of(any_value):
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def spans_of(request):
    for resource_spans in request.resource_spans:
        service = next(
            (value_of(a.value) for a in resource_spans.resource.attributes if a.key == "service.name"), None
        )
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                yield {
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "name": span.name,
                    "service": service,
                    "attributes": {a.key: value_of(a.value) for a in span.attributes},
                    "links": [{"trace_id": l.trace_id.hex(), "span_id": l.span_id.hex()} for l in span.links],
                }


def serve(out, port):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.path != "/v1/traces":
                self.send_error(404)
                return
            request = trace_service_pb2.ExportTraceServiceRequest()
            try:
                request.ParseFromString(body)
            except Exception as e:  # a malformed export is the exporter's bug: say so
                self.send_error(400, str(e))
                return
            with open(out, "a", encoding="utf-8") as f:
                for span in spans_of(request):
                    f.write(json.dumps(span) + "\n")
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on {server.server_address[1]}", flush=True)
    server.serve_forever()


def check(path, trace_id, request_span):
    with open(path, encoding="utf-8") as f:
        spans = [s for s in map(json.loads, f) if s["trace_id"] == trace_id]
    by_id = {s["span_id"]: s for s in spans}
    problems = []
    request = by_id.get(request_span)
    if request is None:
        problems.append(f"no request span {request_span} in trace {trace_id}")
    elif request["attributes"].get("http.response.status_code") != 201:
        problems.append(f"request span without status 201: {request['attributes']}")
    for name in ("ledger.record", "consolidation.apply"):
        if not any(s["name"] == name and s["parent_span_id"] == request_span for s in spans):
            problems.append(f"no {name} span whose parent is the request's span")
    for s in spans:
        if s["span_id"] != request_span and s["parent_span_id"] not in by_id:
            problems.append(f"{s['name']} has a parent ({s['parent_span_id']}) outside the trace")
    if problems:
        names = sorted((s["name"], s["span_id"], s["parent_span_id"]) for s in spans)
        print("\n".join(problems + [f"spans of the trace: {names}"]), file=sys.stderr)
        return 1
    print(f"trace {trace_id}: {len(spans)} spans, request -> ledger.record, request -> consolidation.apply")
    return 0


def main(argv):
    if len(argv) >= 2 and argv[0] == "serve":
        port = int(argv[argv.index("--port") + 1]) if "--port" in argv else 0
        serve(argv[1], port)
        return 0
    if len(argv) == 4 and argv[0] == "check":
        return check(argv[1], argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
