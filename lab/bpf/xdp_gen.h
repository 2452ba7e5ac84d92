/* Configuration shared by the XDP generator program (xdp_gen.bpf.c) and its loader (xdpgen.c).
 *
 * The loader writes one `struct gen_cfg` into the program's .rodata before loading it, so the
 * verifier sees constants and the per-packet path has no map lookup for configuration. */
#ifndef LAB_XDP_GEN_H
#define LAB_XDP_GEN_H

struct gen_cfg {
	/* Number of distinct UDP source ports: base port .. base port + flows - 1. 0 or 1 = fixed port. */
	unsigned int flows;
	/* Number of distinct source addresses (low 16 bits of the address stepped). 0 or 1 = fixed. */
	unsigned int src_ips;
	/* UDP source port of flow 0 (host order). */
	unsigned short sport_base;
	/* Low 16 bits of the source address of address 0 (host order). */
	unsigned short sip_lo_base;
	unsigned int pad;
};

#endif
