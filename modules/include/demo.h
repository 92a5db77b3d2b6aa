/* Shared by several demo modules: changing this file rebuilds exactly the
 * modules that include it (api.c and counter.c), and no other. */
#ifndef DEMO_H
#define DEMO_H

#define DEMO_SERVICE "hotplate-demo"

#endif
