{
  "targets": [
    {
      "target_name": "nvi_native",
      "sources": [
        "src/native/addon.c",
        "src/native/napi_util.c",
        "src/native/poll.c",
        "src/native/busy_poll.c",
        "src/native/wake_times.c",
        "src/native/fd_io.c",
        "src/native/tap.c",
        "src/native/raw_socket.c",
        "src/native/udp_esp.c",
        "src/native/kx_sockets.c",
        "src/native/reuseport_group.c",
        "src/native/packet_port.c",
        "src/native/netns.c",
        "src/native/affinity.c",
        "src/native/thread_policy.c",
        "src/native/esp_gcm.c",
        "src/native/gso.c",
        "src/native/gro.c"
      ],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
      "conditions": [
        ["OS!='linux'", { "type": "none", "sources": [] }]
      ]
    }
  ]
}
