// Placeholder until the web UI lands: bundles ui/ into ui-dist/ with esbuild.
import { mkdirSync, writeFileSync } from "node:fs"
mkdirSync(new URL("../ui-dist/", import.meta.url), { recursive: true })
writeFileSync(new URL("../ui-dist/index.html", import.meta.url), "<!doctype html><title>marathon-like</title>\n")
