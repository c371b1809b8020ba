#!/usr/bin/env bash
# Publishes to streamgate over RTMP with ffmpeg: a file if one is given, else a test pattern
# with a 440 Hz tone (H.264 + AAC).
#
#   examples/publish.sh live/cam1 "$TOKEN"               # test pattern
#   examples/publish.sh live/cam1 "$TOKEN" movie.mp4     # a file, looped, in real time
#
# Environment: STREAMGATE_RTMP (default rtmp://127.0.0.1:1935).
set -euo pipefail

stream=${1:?usage: publish.sh STREAM TOKEN [FILE]}
token=${2:?usage: publish.sh STREAM TOKEN [FILE]}
file=${3:-}
url="${STREAMGATE_RTMP:-rtmp://127.0.0.1:1935}/$stream?token=$token"

if [ -n "$file" ]; then
  exec ffmpeg -hide_banner -re -stream_loop -1 -i "$file" \
    -c:v libx264 -preset veryfast -pix_fmt yuv420p -g 50 -c:a aac -ar 44100 -f flv "$url"
fi
exec ffmpeg -hide_banner -re \
  -f lavfi -i testsrc2=size=1280x720:rate=25 -f lavfi -i sine=frequency=440:sample_rate=44100 \
  -c:v libx264 -preset veryfast -pix_fmt yuv420p -g 50 -b:v 2M -c:a aac -b:a 128k -f flv "$url"
