-- Written by llmtrace-load for wrk: the max-rate phase's request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-llmtrace-load-5f0c1e7a9b3d4c2e8a6f1b0d7c9e3a5f"
wrk.body = [==[{"messages":[{"content":"lorem lorem lorem lorem lorem lorem lorem lorem lorem lorem","role":"user"}],"model":"bench-instant"}]==]
