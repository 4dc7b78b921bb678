/**
 * A whole fleet on real parts for end-to-end tests: Debian hosts booted with systemd-nspawn
 * (test/harness), each running driftless.service installed with `driftless install`
 * (test/harness/agent.ts), `driftlessctl serve` as a child process (embedded MQTT broker,
 * SQLite, HTTP API, Git webhooks; support/fleet.ts), a Git smart-HTTP server with the profile
 * repository (support/git-server.ts), and optionally a local apt repository.
 *
 *   const fleet = await E2EFleet.start({ hosts: 3, packages: [{ name: "dl-web", version: "1.0" }] });
 *   const commit = await fleet.publish({ "fleet.yaml": ..., "web.yaml": ... });
 *   await fleet.webhook(commit);                                  // POST /hooks/git, as a forge does
 *   await fleet.untilHosts("in sync", fleet.ids, (h) => h.commit === commit && h.sync === "in-sync");
 *   await fleet.stop();
 *
 * Hosts run with a long interval and no splay: runs happen when a test asks for them (a push's
 * refresh, `POST /api/v1/hosts/{id}/converge`, `systemctl reload driftless`), never by the clock.
 */
import { createHmac, randomUUID } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import type { HostDetail, HostSummary, RunView } from "../../controlplane/src/store/types.js";
import {
  type AgentBuild,
  type AgentSettings,
  agentBuild,
  driftless,
  installAgent,
  type StatusRun,
} from "../harness/agent.js";
import { type AptRepo, createAptRepo, type DebSpec, useAptRepo } from "../harness/deb.js";
import { bootHosts, type TestHost } from "../harness/host.js";
import { hostSupport } from "../harness/skip.js";
import { BUILD_TIMEOUT_MS, binarySupport } from "./binary.js";
import { addHost, eventually, ServeProcess } from "./fleet.js";
import { cleanup, createRepo, type GitServer, type SigningKey, startGitServer, type WorkRepo } from "./git-server.js";
import { tempDir } from "./repo.js";

/**
 * Whether the fleet's hosts can run here: systemd-nspawn hosts and the x64 single binary they
 * install. Says why with console.warn when not, so the skip is visible.
 */
export function fleetSupport(): { can: boolean; reason: string } {
  const hosts = hostSupport();
  if (!hosts.can) return hosts;
  return binarySupport("x64");
}

/** Booting the hosts waits for the binary, whose first build on a machine takes minutes. */
export const FLEET_START_TIMEOUT_MS = BUILD_TIMEOUT_MS;

export interface FleetOptions {
  /** How many hosts to boot. */
  hosts: number;
  /** Labels of host `i` (0-based) at install. */
  labels?: (index: number) => Record<string, string>;
  /** Published in a local apt repository the hosts use (Debian's mirror switched off). */
  packages?: DebSpec[];
}

/** The repository's first commit: every host gets a profile with one file. */
const FIRST_TREE = {
  "fleet.yaml": "apiVersion: driftless/v1\nkind: Fleet\nassignments:\n  - match: {}\n    profiles: [base]\n",
  "base.yaml":
    'apiVersion: driftless/v1\nkind: Profile\nname: base\nfiles:\n  - { path: /etc/driftless-e2e/base, content: "e2e\\n" }\n',
};

export class E2EFleet {
  readonly hosts: TestHost[];
  /** Host ids (the machine names), in the order of `hosts`. */
  readonly ids: string[];
  readonly serve: ServeProcess;
  readonly git: GitServer;
  readonly repo: WorkRepo;
  readonly apt: AptRepo | undefined;
  readonly #webhookSecret: string;
  readonly #passwords: Map<string, string>;
  readonly #settings = new Map<string, AgentSettings>();
  readonly #build: AgentBuild;

  private constructor(parts: {
    hosts: TestHost[];
    serve: ServeProcess;
    git: GitServer;
    repo: WorkRepo;
    apt: AptRepo | undefined;
    webhookSecret: string;
    passwords: Map<string, string>;
    build: AgentBuild;
  }) {
    this.hosts = parts.hosts;
    this.ids = parts.hosts.map((h) => h.name);
    this.serve = parts.serve;
    this.git = parts.git;
    this.repo = parts.repo;
    this.apt = parts.apt;
    this.#webhookSecret = parts.webhookSecret;
    this.#passwords = parts.passwords;
    this.#build = parts.build;
  }

  /**
   * Boots the hosts, starts serve and the Git server, installs the agent on every host, and
   * resolves once every host is online in the API, in sync on the repository's first commit.
   */
  static async start(options: FleetOptions): Promise<E2EFleet> {
    const build = await agentBuild({ form: "binary" });
    let apt: AptRepo | undefined;
    let hosts: TestHost[] = [];
    let serve: ServeProcess | undefined;
    try {
      const git = await startGitServer();
      const repo = await createRepo(git, "fleet");
      const secretFile = path.join(tempDir("driftless-e2e-"), "webhook-secret");
      const webhookSecret = randomUUID();
      writeFileSync(secretFile, `${webhookSecret}\n`, { mode: 0o600 });
      serve = await ServeProcess.create({ webhookSecretFile: secretFile });
      await serve.start();
      if (options.packages?.length) {
        apt = await createAptRepo();
        await apt.publish(...options.packages);
      }
      hosts = await bootHosts(options.hosts, { binds: [...build.binds, ...(apt ? [apt.bind] : [])] });
      const passwords = new Map(hosts.map((h) => [h.name, addHost(serve?.settings.data ?? "", h.name)]));
      const fleet = new E2EFleet({ hosts, serve, git, repo, apt, webhookSecret, passwords, build });
      const first = await fleet.publish(FIRST_TREE);
      await Promise.all(
        hosts.map(async (host, i) => {
          if (apt) await useAptRepo(host, apt);
          await fleet.install(host, { labels: options.labels?.(i) ?? {} });
        }),
      );
      await fleet.untilHosts(
        "every host online, in sync on the first commit",
        fleet.ids,
        (h) => h.online && h.sync === "in-sync" && h.commit === first,
      );
      return fleet;
    } catch (error) {
      await Promise.all(hosts.map((h) => h.stop()));
      await serve?.stop();
      await apt?.dispose();
      await cleanup();
      build.dispose();
      throw error;
    }
  }

  async stop(): Promise<void> {
    await Promise.all(this.hosts.map((h) => h.stop()));
    await this.serve.stop();
    await this.apt?.dispose();
    await cleanup();
    this.#build.dispose();
  }

  /** The host with id `id`. */
  host(id: string): TestHost {
    const host = this.hosts.find((h) => h.name === id);
    if (!host) throw new Error(`no host ${id} in this fleet`);
    return host;
  }

  /**
   * Installs the agent on `host` (or changes its configuration) with the fleet's source and
   * broker and these settings; what is not given is the default (enforce, no trust, no labels).
   */
  async install(host: TestHost, settings: Partial<Omit<AgentSettings, "hostId">> = {}): Promise<void> {
    const full: AgentSettings = {
      source: this.git.url("fleet"),
      hostId: host.name,
      broker: { url: this.serve.mqttUrl, password: this.#passwords.get(host.name) ?? "" },
      ...settings,
    };
    this.#settings.set(host.name, full);
    await installAgent(host, this.#build, full);
  }

  /** The settings `host` was last installed with. */
  settings(host: TestHost): AgentSettings {
    const settings = this.#settings.get(host.name);
    if (!settings) throw new Error(`${host.name}: no agent installed`);
    return settings;
  }

  /**
   * Makes the repository's tree exactly `files` (path -> content; everything else removed),
   * commits (signed with `sign`) and pushes to main. Returns the commit id.
   */
  async publish(files: Record<string, string>, options: { sign?: SigningKey } = {}): Promise<string> {
    await this.repo.git(["rm", "-r", "--quiet", "--ignore-unmatch", "."]);
    await this.repo.writeFiles(files);
    const commit = await this.repo.commit(`publish ${Object.keys(files).join(", ")}`, {
      allowEmpty: true,
      ...(options.sign ? { sign: options.sign } : {}),
    });
    await this.repo.push();
    return commit;
  }

  /** A GitHub push delivery for `commit` on main to `POST /hooks/git`, signed with the secret. */
  async webhook(commit: string): Promise<{ status: number; body: Record<string, unknown> }> {
    const body = JSON.stringify({ ref: "refs/heads/main", before: "0".repeat(40), after: commit });
    const signature = createHmac("sha256", this.#webhookSecret).update(body).digest("hex");
    const response = await fetch(`${this.serve.url}/hooks/git`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-github-event": "push",
        "x-github-delivery": randomUUID(),
        "x-hub-signature-256": `sha256=${signature}`,
      },
      body,
    });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  }

  /** GET /api/v1/hosts/{id}. */
  hostDetail(id: string): Promise<HostDetail> {
    return this.serve.api<HostDetail>(`hosts/${id}`);
  }

  /** GET /api/v1/hosts (with a query, e.g. `state=in-sync`). */
  async listHosts(query = ""): Promise<HostSummary[]> {
    return (await this.serve.api<{ hosts: HostSummary[] }>(`hosts${query ? `?${query}` : ""}`)).hosts;
  }

  /** The host's runs as the API has them, oldest first. */
  async apiRuns(id: string): Promise<RunView[]> {
    const answer = await this.serve.api<{ runs: RunView[] }>(`hosts/${id}/runs?limit=500`);
    return answer.runs.slice().reverse();
  }

  /** The seq of the host's last run the API has (-1 before any). */
  async lastSeq(id: string): Promise<number> {
    return (await this.hostDetail(id)).lastRun?.seq ?? -1;
  }

  /** POST /api/v1/hosts/{id}/converge: a run from the cached commit, now. */
  converge(id: string): Promise<Record<string, unknown>> {
    return this.serve.api(`hosts/${id}/converge`, "POST");
  }

  /** Polls GET /api/v1/hosts/{id} of each host until `ok` holds for all; returns the details. */
  untilHosts(
    what: string,
    ids: readonly string[],
    ok: (host: HostDetail) => boolean,
    timeoutMs = 90_000,
  ): Promise<HostDetail[]> {
    let last: HostDetail[] = [];
    return eventually(
      () => `${what}; last seen:\n${JSON.stringify(last.map(brief), null, 2)}`,
      async () => {
        last = await Promise.all(ids.map((id) => this.hostDetail(id)));
        return last.every(ok) && last;
      },
      timeoutMs,
    );
  }

  /** The runs `driftless status --json` shows on the host, newest first. */
  async hostRuns(host: TestHost, limit = 500): Promise<StatusRun[]> {
    const result = await driftless(host, "status", "--json", "--limit", String(limit));
    if (result.exitCode !== 0)
      throw new Error(`${host.name}: driftless status exited ${result.exitCode}: ${result.stderr}`);
    return (JSON.parse(result.stdout) as { runs: StatusRun[] }).runs;
  }

  /** `systemctl reload driftless` (SIGHUP): the agent fetches and runs now. */
  async reload(host: TestHost): Promise<void> {
    await host.execChecked("systemctl", ["reload", "driftless"]);
  }

  /** A file on the host, or null. */
  read(host: TestHost, file: string): string | null {
    try {
      return readFileSync(path.join(host.rootDir, file), "utf8");
    } catch {
      return null;
    }
  }

  /** Writes a file on the host (through its root on this machine), as an operator's edit. */
  write(host: TestHost, file: string, content: string): void {
    writeFileSync(path.join(host.rootDir, file), content);
  }
}

/** What an assertion message shows of a host. */
function brief(h: HostDetail) {
  return {
    id: h.id,
    presence: h.presence,
    sync: h.sync,
    commit: h.commit,
    session: h.session,
    lastRun: h.lastRun,
    drift: h.drift,
  };
}
