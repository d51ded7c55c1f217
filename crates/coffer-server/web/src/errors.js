// The error classes of docs/FORMAT.md §11.2, shared by the decoder and its parts.

/** A failure of one of the classes of §11.2 (`kind`), with a reason for people. */
export class CofferError extends Error {
  constructor(kind, why) {
    super(`${kind}: ${why}`);
    this.kind = kind;
  }
}
