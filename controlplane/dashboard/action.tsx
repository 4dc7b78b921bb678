/**
 * A button that acts only after a confirmation, then says how it went. Keyboard: the confirm
 * button takes the focus; Escape cancels.
 */
import { useEffect, useRef, useState } from "preact/hooks";

type Phase = { kind: "idle" } | { kind: "confirm" } | { kind: "busy" } | { kind: "done"; ok: boolean; text: string };

export function ConfirmAction(props: { label: string; question: string; run: () => Promise<string>; testId: string }) {
  const [phase, setPhase] = useState<Phase>({ kind: "idle" });
  const confirmRef = useRef<HTMLButtonElement>(null);
  useEffect(() => {
    if (phase.kind === "confirm") confirmRef.current?.focus();
  }, [phase.kind]);
  const go = async () => {
    setPhase({ kind: "busy" });
    try {
      setPhase({ kind: "done", ok: true, text: await props.run() });
    } catch (error) {
      setPhase({ kind: "done", ok: false, text: (error as Error).message });
    }
  };
  return (
    <span class="action" data-testid={props.testId}>
      {phase.kind === "confirm" ? (
        <fieldset class="confirm" onKeyDown={(e) => e.key === "Escape" && setPhase({ kind: "idle" })}>
          <legend>{props.question}</legend>
          <button type="button" ref={confirmRef} class="primary" onClick={go}>
            Confirm
          </button>{" "}
          <button type="button" onClick={() => setPhase({ kind: "idle" })}>
            Cancel
          </button>
        </fieldset>
      ) : (
        <button type="button" disabled={phase.kind === "busy"} onClick={() => setPhase({ kind: "confirm" })}>
          {phase.kind === "busy" ? "Sending…" : props.label}
        </button>
      )}
      {phase.kind === "done" ? (
        <span class={phase.ok ? "outcome ok" : "outcome bad"} role="status">
          {phase.text}
        </span>
      ) : null}
    </span>
  );
}
