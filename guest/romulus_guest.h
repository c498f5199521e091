/* C ABI of the guest SDK (see guest/guest.h for the contract).
 *
 * romulus_attach() returns 0 on success, or -1 after printing why to stderr; it is
 * idempotent and thread-safe. The arena accessors return 0/NULL before a successful
 * attach. romulus_update_begin()/romulus_update_end() bracket an all-or-nothing
 * section, nest on one thread, and must pair on the thread that began them. */
#ifndef ROMULUS_GUEST_ROMULUS_GUEST_H_
#define ROMULUS_GUEST_ROMULUS_GUEST_H_

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

int romulus_attach(void);
void* romulus_arena_base(void);
size_t romulus_arena_size(void);
int romulus_resumed(void);
void romulus_update_begin(void);
void romulus_update_end(void);

#ifdef __cplusplus
}
#endif

#endif /* ROMULUS_GUEST_ROMULUS_GUEST_H_ */
