/*
 * tok_added.c - byte trie of added/special token contents.
 *
 * HF `tokenizers` finds added tokens with an Aho-Corasick automaton in leftmost-longest
 * mode. A trie walked from every candidate position gives the same matches: the scan stops
 * at the first position where any pattern matches (leftmost) and takes the deepest accepting
 * node there (longest). Only bytes that begin some pattern are probed, so ordinary text
 * costs one table lookup per byte.
 */
#include "tok_impl.h"
#include "hadal/alloc.h"

static int32_t trie_node_new(tok_trie_t *t, uint8_t byte)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 256;
        tok_trie_node_t *nodes = hd_realloc(t->nodes, cap * sizeof(*nodes), "tok trie");
        if (nodes == NULL) {
            return -1;
        }
        t->nodes = nodes;
        t->cap = cap;
    }
    tok_trie_node_t *nd = &t->nodes[t->n];
    nd->child = -1;
    nd->sibling = -1;
    nd->token = -1;
    nd->byte = byte;
    return (int32_t)t->n++;
}

hd_status_t tok_trie_add(tok_trie_t *t, const uint8_t *s, size_t n, int32_t token)
{
    int32_t cur;
    if (n == 0) {
        return HD_OK;
    }
    if (t->n == 0 && trie_node_new(t, 0) < 0) {
        return HD_ERR_NO_MEMORY;
    }
    cur = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t k = t->nodes[cur].child;
        while (k >= 0 && t->nodes[k].byte != s[i]) {
            k = t->nodes[k].sibling;
        }
        if (k < 0) {
            k = trie_node_new(t, s[i]);
            if (k < 0) {
                return HD_ERR_NO_MEMORY;
            }
            t->nodes[k].sibling = t->nodes[cur].child;
            t->nodes[cur].child = k;
        }
        cur = k;
    }
    /* the first token with a given content wins, like the automaton's lowest pattern id */
    if (t->nodes[cur].token < 0) {
        t->nodes[cur].token = token;
    }
    t->first[s[0]] = true;
    return HD_OK;
}

void tok_trie_cleanup(tok_trie_t *t)
{
    hd_free(t->nodes);
    t->nodes = NULL;
    t->n = t->cap = 0;
}
