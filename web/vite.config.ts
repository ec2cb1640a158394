/// <reference types="vitest/config" />
import { defineConfig } from "vite";

// `npm run build` writes the UI into the Python package, which serves it at `/`.
export default defineConfig({
  base: "/",
  build: {
    outDir: "../src/investo/web_dist",
    emptyOutDir: true,
    target: "es2022",
    chunkSizeWarningLimit: 1000,
  },
  server: {
    // `npm run dev` against a running `investo up` on :8000
    proxy: {
      "/api": "http://127.0.0.1:8000",
      "/stream": { target: "ws://127.0.0.1:8000", ws: true },
      "/ws": { target: "ws://127.0.0.1:8000", ws: true },
    },
  },
  test: {
    include: ["src/**/*.test.ts"],
    environment: "node",
  },
});
