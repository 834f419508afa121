// settings: one row per setting of the config file (nginx's command table): its section,
// name, type, range and default, and where an integer goes. The loader rejects names the
// table does not have (with a "did you mean"), reads integers, ranges and defaults from it,
// and tests/docs.py checks that mtlsgw.conf(5) and etc/mtlsgw.conf describe every row.
// Settings whose values need more than a range (addresses, lists, files) are parsed by
// their section's loader; their row still names them. Private to policy/.
#ifndef MTLSGW_POLICY_SETTINGS_H
#define MTLSGW_POLICY_SETTINGS_H

#include <stddef.h>

#include "policy/loader.h"

typedef enum {
    PST_INT,     // an integer in [min, max]; with a field, read and defaulted from the table
    PST_STRING,  // a string (a name, a path, a URI, one of some words): the section parses it
    PST_LIST,    // a list or array: the section parses it
    PST_GROUP,   // a group { ... } of its own settings (a section)
    PST_ANY,     // a string or a list of strings: the section parses it
    PST_BOOL,    // true or false (default: dflt), read into the int at field
} pol_setting_type;

#define PST_NO_FIELD ((size_t)-1)

typedef struct {
    const char *section;  // "" the top level, "limits", "identities[]" (each element of a list), ...
    const char *name;
    pol_setting_type type;
    long long min, max, dflt;  // PST_INT (PST_BOOL: dflt)
    size_t field;              // PST_INT, PST_BOOL: offset of its int in the section's struct, or PST_NO_FIELD
} pol_setting;

extern const pol_setting pol_settings[];
extern const size_t pol_num_settings;

// pol_settings_check_members reports every member of |group| that section |section| of the
// table does not have (|prefix| names the group in messages).
void pol_settings_check_members(loader *ld, const config_setting_t *group, const char *prefix, const char *section);

// pol_settings_read_ints sets each PST_INT and PST_BOOL with a field of |section| in |base|
// (the section's struct) to its default, then to its value in |group| when set there (a
// value out of range, or not true/false, is a file:line error). |group| may be NULL (the section is absent).
void pol_settings_read_ints(loader *ld, const config_setting_t *group, const char *prefix, const char *section,
                            void *base);

#endif
