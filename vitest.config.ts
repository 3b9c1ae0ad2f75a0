import { defineConfig } from "vitest/config"

// One vitest project per workspace, all run by `npm test` (after `turbo run build`). Tests import
// packages by name, so they exercise the built `dist/` exactly as users get it.
const workspaces = [
  ["proto", "packages/proto"],
  ["storage", "packages/storage"],
  ["sdk-executor", "packages/sdk-executor"],
  ["sdk-scheduler", "packages/sdk-scheduler"],
  ["cluster-core", "packages/cluster-core"],
  ["testkit", "packages/testkit"],
  ["hello-framework", "examples/hello-framework"],
  ["hello-world", "examples/hello-world"],
  ["kv-store", "examples/kv-store"],
  ["marathon-like", "apps/marathon-like"],
  ["integration", "."]
] as const

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    env: { TESTCONTAINERS_RYUK_DISABLED: "true" },
    reporters: ["default", "./scripts/summary-reporter.ts"],
    projects: workspaces.map(([name, dir]) => ({
      extends: true,
      test: { name, include: [`${dir}/test/**/*.test.ts`] }
    }))
  }
})
