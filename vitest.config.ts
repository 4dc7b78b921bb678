import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    // Test hosts (systemd-nspawn) are heavy: two test files at a time on this size of machine.
    maxWorkers: 2,
    reporters: ["default", "./test/summary-reporter.ts"],
    projects: [
      {
        test: { name: "unit", include: ["test/unit/**/*.test.ts"] },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts", "test/e2e/**/*.test.ts"],
          // Builds dist/driftless.mjs once: tests that run the CLI run what users run.
          globalSetup: ["test/global-setup.ts"],
          testTimeout: 120_000,
          hookTimeout: 600_000,
        },
      },
    ],
  },
});
