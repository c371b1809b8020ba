// streamgate client for the bundled pages: WebRTC with WebSocket signaling (the Ant Media
// message set) or WHIP and WHEP over HTTP (`&via=whip`), one RTCPeerConnection per session;
// and HLS playback with hls.js (served at /hls.js, loaded only when needed), which the play
// page falls back on in the order of its `playOrder` parameter. No build step.
"use strict";

const streamgate = {
  // What happened so far, for the page and for tests: `via` is the protocol that played
  // (webrtc, whep, hls), `tokenExpiresOn` when the token expires (Unix ms) if it does.
  state: {
    status: "idle", errors: [], notifications: [], pc: null, ws: null, hls: null,
    via: "", tokenExpiresOn: null,
  },

  // Query parameter `name` of the page URL.
  param(name) {
    return new URLSearchParams(location.search).get(name) || "";
  },

  // The stream the page is for: `?id=app/stream`, or `?id=stream` on an application's
  // pages (`/{App}/play.html`, `/{App}?id=`), as Ant Media's sample pages take it.
  streamName() {
    const id = this.param("id");
    if (!id || id.includes("/")) return id;
    const app = location.pathname.split("/").filter((s) => s)[0] || "";
    return app && !app.endsWith(".html") ? app + "/" + id : id;
  },

  noteExpiry(ms, opts) {
    if (!Number.isFinite(ms)) return;
    this.state.tokenExpiresOn = ms;
    if (opts.onTokenExpiry) opts.onTokenExpiry(ms);
  },

  socketUrl() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    return scheme + "://" + location.host + "/websocket";
  },

  // Opens the socket and runs one publish or play session.
  // opts: { mode: "publish"|"play", streamId, token, stream (MediaStream to publish),
  //         codec ("h264"|"vp8", publish only), onTrack(event), onStatus(text, isError) }
  start(opts) {
    const st = this.state;
    const say = (text, isError) => {
      st.status = text;
      if (isError) st.errors.push(text);
      if (opts.onStatus) opts.onStatus(text, !!isError);
    };
    const ws = new WebSocket(this.socketUrl());
    st.ws = ws;
    const send = (obj) => ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(obj));
    let pc = null;
    const newPeer = () => {
      pc = new RTCPeerConnection({ iceServers: [] });
      st.pc = pc;
      pc.onicecandidate = (e) => {
        if (e.candidate && e.candidate.candidate) {
          send({ command: "takeCandidate", streamId: opts.streamId,
                 label: e.candidate.sdpMLineIndex, id: e.candidate.sdpMid,
                 candidate: e.candidate.candidate });
        }
      };
      pc.ontrack = (e) => opts.onTrack && opts.onTrack(e);
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === "failed") say("connection failed", true);
      };
      return pc;
    };
    const closePeer = () => {
      if (pc) pc.close();
      pc = null;
    };

    ws.onopen = () => {
      say("connecting");
      send({ command: opts.mode, streamId: opts.streamId, token: opts.token });
    };
    ws.onmessage = async (event) => {
      let msg;
      try { msg = JSON.parse(event.data); } catch (e) { return; }
      try {
        if (msg.command === "start") {
          // Publish: the server is ready for our offer.
          newPeer();
          for (const track of opts.stream.getTracks()) {
            const tr = pc.addTransceiver(track, { direction: "sendonly", streams: [opts.stream] });
            if (track.kind === "video" && opts.codec && tr.setCodecPreferences) {
              const caps = RTCRtpSender.getCapabilities("video").codecs;
              const wanted = caps.filter((c) => c.mimeType.toLowerCase() === "video/" + opts.codec);
              if (wanted.length) tr.setCodecPreferences(wanted);
            }
          }
          const offer = await pc.createOffer();
          await pc.setLocalDescription(offer);
          send({ command: "takeConfiguration", streamId: opts.streamId, type: "offer", sdp: offer.sdp });
        } else if (msg.command === "takeConfiguration") {
          if (msg.type === "offer") {
            // Play: the server offers, we answer.
            closePeer();
            newPeer();
            await pc.setRemoteDescription({ type: "offer", sdp: msg.sdp });
            const answer = await pc.createAnswer();
            await pc.setLocalDescription(answer);
            send({ command: "takeConfiguration", streamId: opts.streamId, type: "answer", sdp: answer.sdp });
          } else if (pc) {
            await pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
          }
        } else if (msg.command === "takeCandidate") {
          if (pc) await pc.addIceCandidate({ candidate: msg.candidate, sdpMLineIndex: msg.label, sdpMid: msg.id });
        } else if (msg.command === "notification") {
          st.notifications.push(msg.definition);
          if (msg.tokenExpiresOn) this.noteExpiry(Number(msg.tokenExpiresOn), opts);
          if (msg.definition === "play_started") st.via = "webrtc";
          const text = {
            publish_started: "publishing",
            publish_finished: "publishing ended",
            play_started: "playing",
            play_finished: "playback ended",
            play_waiting: "waiting for the stream to start",
          }[msg.definition] || msg.definition;
          say(msg.reason ? text + " (" + msg.reason + ")" : text);
          if (msg.definition === "publish_finished" || msg.definition === "play_finished") closePeer();
        } else if (msg.command === "error") {
          const text = {
            unauthorized_access: "not authorized: check the token",
            no_stream_exist: "the stream is not live",
            streamIdInUse: "this stream is already being published",
            invalidStreamName: "invalid stream name",
            noStreamNameSpecified: "no stream name given",
            bframes_not_supported: "the stream's video has B-frames, which this server does not re-encode for it",
            highResourceUsage: "the server has no room to re-encode this stream's video now; try again later",
          }[msg.definition] || msg.definition;
          say("error: " + text, true);
          st.errors.push(msg.definition);
          closePeer();
        }
      } catch (e) {
        say("error: " + e, true);
      }
    };
    ws.onclose = () => {
      if (st.status === "connecting" || st.status === "playing" || st.status === "publishing") {
        say("disconnected from the server", true);
      }
      closePeer();
    };
    return {
      stop() {
        send({ command: "stop", streamId: opts.streamId });
        closePeer();
      },
    };
  },

  // What a refused WHIP or WHEP request's status means.
  httpError(status) {
    return {
      401: "not authorized: check the token",
      403: "refused by the token's rules",
      404: "the stream is not live",
      409: "this stream is already being published",
      422: "the stream's video has B-frames, which this server does not re-encode for it",
      429: "too many sessions from this address",
      503: "the server is busy; try again later",
    }[status] || "refused (" + status + ")";
  },

  // Runs one publish (WHIP) or play (WHEP) session over HTTP, the offer sent with every
  // candidate in it (as OBS does). Same options as start().
  startHttp(opts) {
    const st = this.state;
    const say = (text, isError) => {
      st.status = text;
      if (isError) st.errors.push(text);
      if (opts.onStatus) opts.onStatus(text, !!isError);
    };
    const pc = new RTCPeerConnection({ iceServers: [] });
    st.pc = pc;
    let resource = null;
    pc.ontrack = (e) => opts.onTrack && opts.onTrack(e);
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "connected") {
        if (opts.mode !== "publish") st.via = "whep";
        say(opts.mode === "publish" ? "publishing" : "playing");
      }
      else if (pc.connectionState === "failed") say("connection failed", true);
    };
    const run = async () => {
      if (opts.mode === "publish") {
        for (const track of opts.stream.getTracks()) {
          const tr = pc.addTransceiver(track, { direction: "sendonly", streams: [opts.stream] });
          if (track.kind === "video" && tr.setCodecPreferences) {
            const caps = RTCRtpSender.getCapabilities("video").codecs;
            const wanted = caps.filter((c) => c.mimeType.toLowerCase() === "video/" + (opts.codec || "h264"));
            if (wanted.length) tr.setCodecPreferences(wanted);
          }
        }
      } else {
        pc.addTransceiver("audio", { direction: "recvonly" });
        pc.addTransceiver("video", { direction: "recvonly" });
      }
      await pc.setLocalDescription(await pc.createOffer());
      await new Promise((done) => {
        if (pc.iceGatheringState === "complete") return done();
        pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && done());
        setTimeout(done, 3000);
      });
      say("connecting");
      const headers = { "Content-Type": "application/sdp" };
      if (opts.token) headers.Authorization = "Bearer " + opts.token;
      const kind = opts.mode === "publish" ? "whip" : "whep";
      const response = await fetch("/" + opts.streamId + "/" + kind, {
        method: "POST", headers, body: pc.localDescription.sdp,
      });
      if (response.status !== 201) {
        st.errors.push(String(response.status));
        say("error: " + this.httpError(response.status), true);
        pc.close();
        return;
      }
      resource = new URL(response.headers.get("Location"), location.href);
      await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
    };
    run().catch((e) => say("error: " + e, true));
    return {
      stop() {
        if (resource) fetch(resource, { method: "DELETE" }).catch(() => {});
        pc.close();
      },
    };
  },

  // start() or startHttp(), as the page's `via` parameter asks (`whip` or `whep`: HTTP).
  open(opts) {
    const via = this.param("via").toLowerCase();
    return via === "whip" || via === "whep" ? this.startHttp(opts) : this.start(opts);
  },

  // What a refused HLS request's status means.
  hlsError(status) {
    return {
      403: "not authorized: check the token",
      404: "the stream is not live",
      503: "the server is busy; try again later",
    }[status] || "refused (" + status + ")";
  },

  // Loads hls.js once.
  loadHlsJs() {
    if (window.Hls) return Promise.resolve();
    if (!this.hlsJsLoading) {
      this.hlsJsLoading = new Promise((done, fail) => {
        const script = document.createElement("script");
        script.src = "/hls.js";
        script.onload = done;
        script.onerror = () => fail(new Error("hls.js did not load"));
        document.head.appendChild(script);
      });
    }
    return this.hlsJsLoading;
  },

  // Plays the stream over HLS into opts.video (LL-HLS unless opts.lowLatency is false). The
  // master playlist opens the session (and tells when the token expires); hls.js then
  // follows the media playlist, whose URIs carry the session.
  // opts: { streamId, token, video, lowLatency, onStatus, onTokenExpiry, onFail }
  playHls(opts) {
    const st = this.state;
    const say = (text, isError) => {
      st.status = text;
      if (isError) st.errors.push(text);
      if (opts.onStatus) opts.onStatus(text, !!isError);
    };
    let hls = null;
    let stopped = false;
    const fail = (text) => {
      say("error: " + text, true);
      if (opts.onFail) opts.onFail(text);
    };
    const run = async () => {
      const parts = opts.streamId.split("/");
      const app = parts.shift();
      const query = opts.token ? "?token=" + encodeURIComponent(opts.token) : "";
      const master = new URL("/" + encodeURIComponent(app) + "/streams/" +
        encodeURIComponent(parts.join("/")) + ".m3u8" + query, location.href);
      say("connecting (HLS)");
      const response = await fetch(master);
      if (!response.ok) return fail(this.hlsError(response.status));
      const expires = response.headers.get("Token-Expires");
      if (expires) this.noteExpiry(Date.parse(expires), opts);
      const variant = (await response.text()).split("\n").map((l) => l.trim())
        .find((l) => l && !l.startsWith("#"));
      if (!variant) return fail("the playlist names no media playlist");
      const media = new URL(variant, master).href;
      if (stopped) return;
      const video = opts.video;
      video.addEventListener("playing", () => {
        st.via = "hls";
        say("playing");
      }, { once: true });
      await this.loadHlsJs().catch(() => {});
      if (window.Hls && window.Hls.isSupported()) {
        // After a stall, play up to 1.5 times as fast until back at the target latency
        // (hls.js otherwise stays behind for good), and raise that target by 0.2 s a stall
        // rather than hls.js's whole second, which takes a low-latency viewer past 2 s after
        // one hiccup of the network or the machine.
        hls = new window.Hls({
          lowLatencyMode: opts.lowLatency !== false,
          maxLiveSyncPlaybackRate: 1.5,
          liveSyncOnStallIncrease: 0.2,
        });
        st.hls = hls;
        hls.on(window.Hls.Events.ERROR, (_, data) => {
          if (!data.fatal) return;
          const status = data.response && data.response.code;
          if (status === 403) fail("playback ended: the token no longer allows it");
          else if (status) fail(this.hlsError(status));
          else fail(data.details || "HLS playback failed");
          hls.destroy();
        });
        hls.loadSource(media);
        hls.attachMedia(video);
      } else if (video.canPlayType("application/vnd.apple.mpegurl")) {
        video.src = media;
      } else {
        return fail("this browser plays neither HLS nor Media Source Extensions");
      }
      video.play().catch(() => {
        video.muted = true;
        video.play().catch(() => {});
        if (opts.onMuted) opts.onMuted();
      });
    };
    run().catch((e) => fail(String(e)));
    return {
      stop() {
        stopped = true;
        if (hls) hls.destroy();
      },
    };
  },

  // Plays the stream with each protocol of `order` in turn (`webrtc`, `hls`), moving on when
  // one fails or has not started playing within `patienceMs`.
  // opts: { streamId, token, video, order, patienceMs, lowLatency, onStatus, onTokenExpiry,
  //         onMuted }
  play(opts) {
    const st = this.state;
    const order = opts.order.length ? opts.order : ["webrtc"];
    let current = null;
    let step = -1;
    const next = () => {
      if (current) current.stop();
      current = null;
      step += 1;
      const protocol = order[step];
      if (!protocol) return;
      const more = step + 1 < order.length;
      if (protocol === "hls") {
        // A stream object would hide the media source hls.js attaches.
        opts.video.srcObject = null;
        current = this.playHls({ ...opts, onFail: () => more && next() });
        return;
      }
      // WebRTC: the stream in a MediaStream the video shows.
      const media = new MediaStream();
      opts.video.srcObject = media;
      const errors = st.errors.length;
      const session = this.open({
        mode: "play",
        streamId: opts.streamId,
        token: opts.token,
        onStatus: (text, isError) => {
          if (opts.onStatus) opts.onStatus(text, isError);
          if (isError && more && current === session) next();
        },
        onTokenExpiry: opts.onTokenExpiry,
        onTrack: (e) => {
          for (const old of media.getTracks().filter((t) => t.kind === e.track.kind)) media.removeTrack(old);
          media.addTrack(e.track);
          opts.video.play().catch(() => {
            opts.video.muted = true;
            opts.video.play().catch(() => {});
            if (opts.onMuted) opts.onMuted();
          });
        },
      });
      current = session;
      if (more) {
        setTimeout(() => {
          if (current === session && st.status !== "playing") {
            if (st.errors.length === errors) st.errors.push("webrtc did not start in time");
            opts.video.srcObject = null;
            next();
          }
        }, opts.patienceMs || 8000);
      }
    };
    next();
    return { stop: () => current && current.stop() };
  },
};
window.streamgate = streamgate;
