// Ships beside the generated MendCore.swift (Sources/MendCore/). uniffi cannot declare a
// conformance itself: this makes `localizedDescription` the core's sentence, not the case's
// debug description, and gives every case its stable code.

import Foundation

extension MendError: LocalizedError {
    /// The core's sentence ("not allowed: only the commitment's owner can claim …").
    public var errorDescription: String? { message }

    /// The core's sentence, whatever the case.
    public var message: String {
        switch self {
        case .PermissionDenied(let m), .NotFound(let m), .Invalid(let m), .Removed(let m),
             .Invite(let m), .Pairing(let m), .DeviceRemoved(let m), .Locked(let m), .TooNew(let m), .Missing(let m), .Corrupt(let m),
             .Io(let m), .Tampered(let m), .Unreachable(let m), .UntrustedRelay(let m), .Closed(let m), .Internal(let m),
             .Erased(let m):
            return m
        }
    }

    /// A stable code to translate or report by; it never changes for a kind of error.
    public var code: String {
        switch self {
        case .PermissionDenied: return "permission_denied"
        case .NotFound: return "not_found"
        case .Invalid: return "invalid"
        case .Removed: return "removed"
        case .Invite: return "invite"
        case .Pairing: return "pairing"
        case .DeviceRemoved: return "device_removed"
        case .Locked: return "locked"
        case .TooNew: return "too_new"
        case .Missing: return "missing"
        case .Corrupt: return "corrupt"
        case .Io: return "io"
        case .Tampered: return "tampered"
        case .Unreachable: return "unreachable"
        case .UntrustedRelay: return "untrusted_relay"
        case .Closed: return "closed"
        case .Internal: return "internal"
        case .Erased: return "erased"
        }
    }
}
