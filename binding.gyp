{
  "targets": [
    {
      "target_name": "provisiond_native",
      "sources": ["native/p256.c"],
      "cflags": ["-O2", "-Wno-deprecated-declarations"]
    }
  ]
}
