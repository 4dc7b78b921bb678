/**
 * A button that acts only after a confirmation, then says how it went. Keyboard: the confirm
 * button takes the focus; Escape or Cancel gives it back to the button, and so does Confirm (the
 * button stays focusable while the action runs, so the focus is never dropped to the page's top).
 */
import { useEffect, useRef, useState } from "preact/hooks";

type Phase = { kind: "idle" } | { kind: "confirm" } | { kind: "busy" } | { kind: "done"; ok: boolean; text: string };

export function ConfirmAction(props: { label: string; question: string; run: () => Promise<string>; testId: string }) {
  const [phase, setPhase] = useState<Phase>({ kind: "idle" });
  const confirmRef = useRef<HTMLButtonElement>(null);
  const buttonRef = useRef<HTMLButtonElement>(null);
  const giveBackFocus = useRef(false);
  useEffect(() => {
    if (phase.kind === "confirm") confirmRef.current?.focus();
    else if (giveBackFocus.current) {
      giveBackFocus.current = false;
      buttonRef.current?.focus();
    }
  }, [phase.kind]);
  const leave = (next: Phase) => {
    giveBackFocus.current = true;
    setPhase(next);
  };
  const go = async () => {
    leave({ kind: "busy" });
    try {
      setPhase({ kind: "done", ok: true, text: await props.run() });
    } catch (error) {
      setPhase({ kind: "done", ok: false, text: (error as Error).message });
    }
  };
  const busy = phase.kind === "busy";
  return (
    <span class="action" data-testid={props.testId}>
      {phase.kind === "confirm" ? (
        <fieldset class="confirm" onKeyDown={(e) => e.key === "Escape" && leave({ kind: "idle" })}>
          <legend>{props.question}</legend>
          <button type="button" ref={confirmRef} class="primary" onClick={go}>
            Confirm
          </button>{" "}
          <button type="button" onClick={() => leave({ kind: "idle" })}>
            Cancel
          </button>
        </fieldset>
      ) : (
        <button
          type="button"
          ref={buttonRef}
          aria-disabled={busy}
          onClick={() => {
            if (!busy) setPhase({ kind: "confirm" });
          }}
        >
          {busy ? "Sending…" : props.label}
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
