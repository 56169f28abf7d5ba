import { defineConfig } from "vitest/config";

// Built into frontend/dist, which the API serves at "/" (same origin as /api/v1, so no CORS and the same tokens).
// Everything is bundled: nothing is fetched from a CDN at run time (hospital networks are often offline).
export default defineConfig({
  base: "/",
  build: { outDir: "dist", emptyOutDir: true, chunkSizeWarningLimit: 4000, sourcemap: false },
  server: { proxy: { "/api": "http://127.0.0.1:8000" } },
  test: { environment: "node", include: ["tests/**/*.test.ts"] },
});
