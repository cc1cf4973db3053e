/* ProcessPrng for Wine 8.0, which has no bcryptprimitives.dll: Rust's std on Windows takes its randomness
 * (HashMap keys, getrandom) from ProcessPrng. This forwards to RtlGenRandom (advapi32's SystemFunction036).
 * Built by scripts/build-windows.sh and placed next to the .exe for Wine only; Windows has the real DLL
 * (docs/windows.md, "How CI runs the builds under Wine"). */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
