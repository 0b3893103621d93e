#!/usr/bin/python3
"""plugin_auth: with "AuthenticationEnabled" and a registered user, the
plugin's routes answer 401 without credentials and work with them."""

import sys

from common import Check, Orthanc, env_paths, orthanc_session


def main():
    plugin, model = env_paths()
    ok = Check("plugin_auth")
    o = Orthanc(plugin, model, users={"alice": "s3cret"})
    with orthanc_session(o, ok):
        routes = [("GET", "/unimed/status"), ("GET", "/unimed/label-sets"),
                  ("GET", "/unimed/findings?label=x"), ("GET", "/unimed/search?text=x"),
                  ("GET", "/unimed/studies/00000000-00000000-00000000-00000000-00000000"),
                  ("POST", "/unimed/studies/00000000-00000000-00000000-00000000-00000000/analyze"),
                  ("POST", "/unimed/classify"), ("GET", "/unimed/studies"),
                  ("POST", "/unimed/studies/analyze-all"),
                  ("GET", "/unimed/studies/00000000-00000000-00000000-00000000-00000000/report.html")]
        for method, path in routes:
            st, _, hdr = o.request(method, path, body=b"" if method == "POST" else None, auth=False)
            ok(st == 401, "%s %s without credentials: %d" % (method, path, st))
        st, _, _ = o.request("GET", "/unimed/status", headers={"Authorization": "Basic YWxpY2U6d3Jvbmc="},
                             auth=False)
        ok(st == 401, "GET /unimed/status with a wrong password: %d" % st)
        st, ans = o.get("/unimed/status")
        ok(st == 200 and ans["enabled"], "GET /unimed/status as alice: 200")
        st, _ = o.get("/unimed/findings?label=x")
        ok(st == 200, "GET /unimed/findings as alice: 200")
    return ok.done()


if __name__ == "__main__":
    sys.exit(main())
