// The C++ half of probe-c: proves that C++ sources build, link libc++ and run in a plugin.
#include <algorithm>
#include <string>
#include <vector>

#include "handler_host.h"

// `{"words": [...]}` -> the strings among the words, sorted with the C++ standard library.
extern "C" hh_status probe_sorted_words(const hh_value *payload, hh_json *reply) {
    const hh_value *words = hh_get(payload, "words");
    if (hh_type_of(words) != HH_ARRAY) return hh_rejected("`words` must be an array");
    std::vector<std::string> sorted;
    for (size_t i = 0; i < hh_len(words); i++)
        if (const char *word = hh_string(hh_at(words, i))) sorted.emplace_back(word);
    std::sort(sorted.begin(), sorted.end());
    hh_json_array(reply);
    for (const std::string &word : sorted) hh_json_string_n(reply, word.data(), word.size());
    hh_json_end(reply);
    return HH_OK;
}
