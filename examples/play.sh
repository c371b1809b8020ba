#!/usr/bin/env bash
# Plays a stream from streamgate over RTMP: in a window with ffplay when there is a display,
# else records ten seconds to out.flv with ffmpeg and shows what ffprobe sees.
#
#   examples/play.sh live/cam1                  # streams viewable without a token
#   examples/play.sh live/cam1 "$SUB_TOKEN"     # streams with subscribeRequiresAuth
#
# Environment: STREAMGATE_RTMP (default rtmp://127.0.0.1:1935).
set -euo pipefail

stream=${1:?usage: play.sh STREAM [SUBSCRIBE_TOKEN]}
url="${STREAMGATE_RTMP:-rtmp://127.0.0.1:1935}/$stream"
[ -n "${2:-}" ] && url="$url?token=$2"

if [ -n "${DISPLAY:-}" ] && command -v ffplay >/dev/null; then
  exec ffplay -hide_banner -fflags nobuffer "$url"
fi
ffmpeg -hide_banner -loglevel error -y -i "$url" -t 10 -c copy -f flv out.flv
ffprobe -hide_banner -v error -show_entries stream=codec_name,width,height,sample_rate -of compact out.flv
