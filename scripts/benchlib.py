"""Helpers shared by the benchmark scripts: tools, ports, /proc readings, starting streamgate
and nginx-rtmp on loopback."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")
SECRET = "bench-api-secret-0123456789abcdef"
NGINX_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
CHUNK_SIZE = 4096


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def apt_install(packages):
    if os.geteuid() != 0:
        sys.exit(f"missing: {' '.join(packages)}; install them (apt-get install ...) and run again")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages], check=True, env=env)


def ensure_tools(extra_commands=()):
    """Installs ffmpeg, nginx with the RTMP module and `extra_commands` ({command: package})
    when missing, and builds the release binaries; returns the target/release directory."""
    missing = []
    if not shutil.which("ffmpeg"):
        missing.append("ffmpeg")
    if not shutil.which("nginx") or not os.path.exists(NGINX_MODULE):
        missing += ["nginx-light", "libnginx-mod-rtmp"]
    for command, package in dict(extra_commands).items():
        if not shutil.which(command):
            missing.append(package)
    if missing:
        apt_install(missing)
    subprocess.run(["cargo", "build", "--release", "--bin", "streamgate", "--bin", "streamgate-load"],
                   cwd=ROOT, check=True)
    return os.path.join(ROOT, "target", "release")


def tree_pids(pid):
    """pid and all its descendants."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    pids, i = [pid], 0
    while i < len(pids):
        pids += children.get(pids[i], [])
        i += 1
    return pids


def cpu_seconds(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError):
            pass
    return total / TICK


def rss_kib(pids, field="VmRSS"):
    """Resident memory of `pids` in KiB: all of it (VmRSS), or one part, such as RssAnon
    (heap and stacks, without the file pages of the binary and its libraries)."""
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def wait_port(port, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"nothing listening on {port}")


def start_streamgate(binary, workdir, extra_env=None, with_http=False):
    """Starts streamgate with `extra_env` besides the bench settings; returns (process, rtmp
    host:port, publish token), and the HTTP host:port last `with_http`."""
    http, rtmp = free_port(), free_port()
    env = dict(os.environ,
               STREAMGATE_HTTP_LISTEN=f"127.0.0.1:{http}", STREAMGATE_RTMP_LISTEN=f"127.0.0.1:{rtmp}",
               STREAMGATE_SRT_LISTEN=f"127.0.0.1:{free_port()}",
               STREAMGATE_DATA_DIR=os.path.join(workdir, f"sg-data-{http}"), STREAMGATE_API_SECRET=SECRET,
               STREAMGATE_CONFIG="/dev/null", STREAMGATE_LOG_LEVEL="warn",
               # every client runs on this host: lift the per-address caps
               STREAMGATE_RTMP_MAX_CONNECTIONS_PER_IP="100000", STREAMGATE_HTTP_MAX_CONNECTIONS_PER_IP="100000",
               STREAMGATE_RTMP_MAX_CONNECTIONS="100000", **(extra_env or {}))
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(workdir, "streamgate.log"), "a"))
    wait_port(http)
    wait_port(rtmp)
    req = urllib.request.Request(
        f"http://127.0.0.1:{http}/api/publish_token", method="POST",
        data=json.dumps({"label": "bench"}).encode(),
        headers={"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"})
    token = json.load(urllib.request.urlopen(req))["data"]["token"]
    if with_http:
        return proc, f"127.0.0.1:{rtmp}", token, f"127.0.0.1:{http}"
    return proc, f"127.0.0.1:{rtmp}", token


def start_nginx(workdir):
    """Starts nginx with the RTMP module, same chunk size; returns (process, rtmp host:port)."""
    port = free_port()
    prefix = os.path.join(workdir, f"nginx-{port}")
    os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        # One worker: nginx-rtmp keeps a live stream in the worker its publisher reached, and a
        # viewer accepted by another worker gets nothing (unless rtmp_auto_push relays the
        # stream between workers). With "auto" on two cores about half the viewers were fed.
        f.write(f"""load_module {NGINX_MODULE};
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 16384; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size {CHUNK_SIZE};
        application live {{
            live on;
            record off;
        }}
    }}
}}
""")
    proc = subprocess.Popen(["nginx", "-p", prefix, "-c", conf], stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(prefix, "logs", "stderr.log"), "w"))
    wait_port(port)
    return proc, f"127.0.0.1:{port}"


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
