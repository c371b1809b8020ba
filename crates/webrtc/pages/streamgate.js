// streamgate WebRTC client for the bundled pages: WebSocket signaling with the Ant Media
// message set, or WHIP and WHEP over HTTP (`&via=whip`); one RTCPeerConnection per session.
// No build step, no dependencies.
"use strict";

const streamgate = {
  // What happened so far, for the page and for tests.
  state: { status: "idle", errors: [], notifications: [], pc: null, ws: null },

  // Query parameter `name` of the page URL.
  param(name) {
    return new URLSearchParams(location.search).get(name) || "";
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
      if (pc.connectionState === "connected") say(opts.mode === "publish" ? "publishing" : "playing");
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
};
window.streamgate = streamgate;
