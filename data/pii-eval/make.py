#!/usr/bin/env python3
"""Generate Trestle's labelled PII evaluation set (texts.jsonl).

Deterministic: a fixed seed, no network, standard library only.

    python3 data/pii-eval/make.py            # write texts.jsonl next to this file
    python3 data/pii-eval/make.py --check    # validate the existing texts.jsonl
    python3 data/pii-eval/make.py --stats    # print the count tables used in README.md

Template mini-language (used in the TEMPLATES section below):

    [[TYPE:literal text]]     a hand-written, labelled span (TYPE is an entity name)
    {{kind}}                  a generated, labelled value (see GENERATORS)
    {{kind:arg}}              ... with an argument (region, brand, country, culture, ...)
    {{kind@key}}              ... bound to key: the same key gives the same value in one text;
                              {{first@a}}, {{last@a}}, {{email@a}} derive from person a
    {{!kind}}                 a generated value that is NOT PII (hard negative, not labelled)

Every checksum-bearing value is generated to be valid (Luhn for cards, ISO 13616
mod-97 for IBANs, SSA rules for SSNs); the hard-negative generators produce values
that are deliberately invalid (Luhn failure, bad IBAN check digits, SSN area
000/666/9xx, group 00 or serial 0000).
"""

import ipaddress
import json
import math
import os
import random
import re
import sys
import unicodedata
from collections import Counter

SEED = 20240611
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "texts.jsonl")

ENTITIES = [
    "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE",
    "US_SSN", "IP_ADDRESS", "PERSON", "LOCATION",
]

# ---------------------------------------------------------------------------
# checksums
# ---------------------------------------------------------------------------


def luhn_ok(number):
    digits = [int(c) for c in number if c.isdigit()]
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def luhn_digit(partial):
    for d in "0123456789":
        if luhn_ok(partial + d):
            return d
    raise AssertionError


def iban_ok(iban):
    s = iban.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{8,30}", s):
        return False
    r = s[4:] + s[:4]
    return int("".join(str(int(c, 36)) for c in r)) % 97 == 1


def iban_check_digits(cc, bban):
    r = bban + cc + "00"
    return "%02d" % (98 - int("".join(str(int(c, 36)) for c in r)) % 97)


def ssn_ok(ssn):
    d = re.sub(r"[ -]", "", ssn)
    if not re.fullmatch(r"\d{9}", d):
        return False
    area, group, serial = d[:3], d[3:5], d[5:]
    if area in ("000", "666") or area[0] == "9":
        return False
    return group != "00" and serial != "0000"


def isbn13(rng):
    core = "978" + "".join(rng.choice("0123456789") for _ in range(9))
    s = sum(int(c) * (1 if i % 2 == 0 else 3) for i, c in enumerate(core))
    return core + str((10 - s % 10) % 10)


# ---------------------------------------------------------------------------
# value pools
# ---------------------------------------------------------------------------

# culture -> (male first names, female first names, surnames); a surname given as
# "m|f" has a male and a female form. Order "east" writes the family name first.
NAMES = {
    "en": ("James Michael Daniel Ryan Thomas Oliver Ethan Nathan George Samuel Connor Marcus "
           "Tyler Brandon Harry Jack Lewis Owen Peter Simon Graham Trevor",
           "Emily Sarah Jessica Hannah Olivia Charlotte Megan Lauren Rachel Amelia Chloe Abigail "
           "Madison Sophie Rebecca Laura Katie Holly Natalie Jennifer Harriet Eleanor",
           "Carter Whitaker Thompson Harris Mitchell Reynolds Bennett Hughes Foster Collins Morgan "
           "Sullivan Brooks Hayes Ward Palmer Fletcher Holloway Barnes Gallagher Donovan Pritchard "
           "Ellison Caldwell Ashworth Sinclair Lambert Marsh Thornton Radcliffe Pemberton Oakley"),
    "es": ("Javier Alejandro Pablo Sergio Diego Carlos Andrés Álvaro Raúl Iker Gonzalo Rubén",
           "Lucía Sofía Carmen Paula Elena Marta Irene Nuria Ainhoa Rocío Pilar Inmaculada",
           "García Fernández Martínez López Sánchez Romero Navarro Torres Domínguez Gil Vázquez "
           "Ortega Rubio Molina Iglesias Castro Herrera Medina Cabrera Aguilar Peña Garrido"),
    "de": ("Jonas Lukas Felix Maximilian Tobias Jürgen Stefan Matthias Florian Niklas Sebastian Uwe "
           "Dieter Henrik",
           "Lena Anna Katrin Julia Sabine Lea Johanna Miriam Franziska Ute Birgit Charlotte Annika "
           "Greta",
           "Müller Schmidt Becker Hoffmann Schröder Wagner Weiß Krüger Hartmann Zimmermann Schäfer "
           "Neumann Braun Vogel Lehmann Köhler Fischer Wolf Böhm Pfeiffer Schulze Kaiser Brandt"),
    "fr": ("Théo Julien Antoine Mathieu Nicolas Hugo Louis Baptiste Jean-Baptiste Rémi Olivier "
           "François Grégoire",
           "Camille Élodie Chloé Manon Léa Inès Margaux Sophie Amélie Céline Aurélie Anaïs Maëlle",
           "Lefèvre Moreau Fournier Girard Rousseau Dubois Lambert Bonnet Mercier Faure Chevalier "
           "Garnier Lemaire Perrin Marchand Dupont Roux Gauthier Leroy Fontaine"),
    "in": ("Arjun Rohan Siddharth Vikram Aditya Rahul Karthik Aniket Harpreet Suresh Imran "
           "Venkatesh Nikhil Abhishek",
           "Priya Ananya Kavya Sneha Divya Meera Pooja Lakshmi Nandini Aishwarya Shruti Fatima "
           "Deepika Ritu",
           "Sharma Iyer Reddy Mehta Nair Banerjee Patel Gupta Krishnan Chatterjee Singh Deshpande "
           "Kulkarni Menon Rao Joshi Pillai Agarwal Bhattacharya Khan Subramanian Malhotra"),
    "zh": ("Wei Jun Hao Lei Ming Jian Zhiwei Yong",
           "Mei Xiuying Lina Jing Yan Xiaoling Fang Ting",
           "Zhang Wang Li Liu Chen Huang Zhao Wu Zhou Lin Xu Sun"),
    "ja": ("Haruto Kenji Takeshi Hiroshi Ren Daiki Sota",
           "Yuki Aiko Sakura Haruka Yui Emi Nanami",
           "Sato Tanaka Takahashi Watanabe Ito Nakamura Kobayashi Yamamoto Suzuki Matsumoto"),
    "ng": ("Chidi Emeka Oluwaseun Tunde Ikenna Babajide Chukwuemeka Yusuf",
           "Ngozi Adaeze Funmilayo Chiamaka Aisha Folake Temitope Blessing",
           "Okafor Adeyemi Bakare Nwosu Eze Okonkwo Adebayo Olawale Ibrahim Obi Balogun Onyekachi"),
    "ar": ("Omar Yousef Khalid Tariq Hassan Karim Mahmoud Rami",
           "Layla Fatima Noor Mariam Yasmin Huda Salma Rania",
           "Haddad Al-Mansouri Abdullah El_Idrissi Nasser Khoury Saleh Al-Farsi Hamdan Benali "
           "Mansour Aziz"),
    "pl": ("Piotr Tomasz Krzysztof Michał Paweł Łukasz",
           "Katarzyna Agnieszka Magdalena Zofia Małgorzata Joanna",
           "Kowalczyk Wójcik Zieliński|Zielińska Nowak Lewandowski|Lewandowska Kamiński|Kamińska "
           "Szymański|Szymańska Dąbrowski|Dąbrowska Mazur Wiśniewski|Wiśniewska"),
    "nl": ("Daan Bram Sem Joost Pieter Thijs",
           "Sanne Fleur Lotte Anouk Femke Iris",
           "de_Vries van_Dijk Jansen Bakker Visser van_den_Berg Smit Mulder"),
    "it": ("Marco Luca Giuseppe Alessandro Matteo Davide",
           "Giulia Francesca Chiara Martina Alessia Serena",
           "Rossi Romano Bianchi Esposito Ricci Colombo Greco Conti De_Luca"),
    "ko": ("Min-jun Ji-ho Seung-woo Dong-hyun",
           "Seo-yeon Ji-woo Eun-ji Ha-eun",
           "Kim Lee Park Choi Jung Kang"),
    "tr": ("Emre Mehmet Burak Can Kerem",
           "Elif Zeynep Ayşe Merve Ebru",
           "Yılmaz Kaya Demir Şahin Çelik Aydın Öztürk"),
    "ua": ("Oleksandr Dmytro Andriy Taras",
           "Olena Iryna Oksana Nataliya",
           "Kovalenko Shevchenko Bondarenko Tkachenko Melnyk"),
    "ie": ("Seán Cian Oisín Callum Ciarán",
           "Siobhán Aoife Niamh Róisín Saoirse",
           "O'Connor O'Sullivan MacLeod McCarthy Fitzgerald Byrne Doyle O'Brien"),
    "vi": ("Minh Tuan Quang Duc",
           "Lan Thu Huong Linh",
           "Nguyễn Trần Lê Phạm Hoàng"),
    "pt": ("João Tiago Rafael Gonçalo",
           "Beatriz Mariana Inês Leonor",
           "Pereira Silva Costa Oliveira Santos Almeida Carvalho"),
    "gr": ("Giorgos Nikos Dimitris Kostas",
           "Eleni Katerina Maria Sofia",
           "Papadopoulos|Papadopoulou Georgiou Nikolaidis|Nikolaidou Antoniou"),
}
NAMES = {k: tuple(p.split() for p in v) for k, v in NAMES.items()}
EAST = {"zh", "ja", "ko", "vi"}

CULTURE_MIX = {
    "en-US": "en:40 es:14 zh:5 in:6 ko:3 ja:2 ng:4 ar:3 pl:3 it:4 vi:3 ie:4 pt:2 ua:2 tr:1 gr:1",
    "en-GB": "en:45 in:10 pl:6 ng:6 ie:7 ar:4 it:3 zh:3 tr:2 fr:3 es:3 pt:2 gr:2 ua:2",
    "en-IN": "in:85 en:4 ar:3 zh:2 ja:2 ng:2 fr:1 de:1",
    "de-DE": "de:65 tr:10 pl:7 it:4 ua:4 ar:3 gr:2 nl:2 en:2 es:1",
    "fr-FR": "fr:68 ar:12 pt:6 it:4 es:3 vi:3 ng:2 en:2",
    "es-ES": "es:75 en:4 fr:3 ar:5 it:3 pt:4 de:2 ua:2 zh:2",
}
CULTURE_MIX = {k: [(c.split(":")[0], int(c.split(":")[1])) for c in v.split()]
               for k, v in CULTURE_MIX.items()}

CITIES = {
    "en-US": "New York|Chicago|Austin|Seattle|Denver|Boston|San Francisco|Atlanta|Phoenix|Portland|"
             "Nashville|Miami|Minneapolis|Philadelphia|San Diego|Pittsburgh|Columbus|Raleigh|"
             "Salt Lake City|Kansas City|Sacramento|Baltimore",
    "en-GB": "London|Manchester|Leeds|Bristol|Glasgow|Edinburgh|Cardiff|Birmingham|Liverpool|"
             "Sheffield|Nottingham|Brighton|Belfast|Newcastle upon Tyne|Oxford|Cambridge|York|Bath",
    "en-IN": "Bengaluru|Mumbai|Pune|Hyderabad|Chennai|New Delhi|Kolkata|Ahmedabad|Jaipur|Kochi|"
             "Gurugram|Noida|Indore|Chandigarh|Coimbatore|Lucknow",
    "de-DE": "Berlin|München|Hamburg|Köln|Frankfurt am Main|Stuttgart|Düsseldorf|Leipzig|Dresden|"
             "Nürnberg|Bremen|Hannover|Freiburg|Mannheim|Münster",
    "fr-FR": "Paris|Lyon|Marseille|Toulouse|Bordeaux|Lille|Nantes|Strasbourg|Montpellier|Rennes|"
             "Nice|Grenoble|Dijon|Clermont-Ferrand",
    "es-ES": "Madrid|Barcelona|Valencia|Sevilla|Bilbao|Málaga|Zaragoza|Granada|Palma|Alicante|"
             "Valladolid|San Sebastián|Salamanca|Córdoba",
    "world": "Tokyo|Osaka|Lagos|Abuja|Dubai|Toronto|Sydney|Melbourne|Singapore|Amsterdam|Rotterdam|"
             "Warsaw|Kraków|Lisbon|Porto|Milan|Rome|Zurich|Geneva|Brussels|Vienna|Dublin|Nairobi|"
             "Cairo|Istanbul|São Paulo|Mexico City|Buenos Aires|Seoul|Shanghai|Shenzhen|Hanoi|Kyiv|"
             "Athens|Vancouver|Cape Town|Riyadh|Stockholm|Copenhagen|Prague",
}
REGIONS = {
    "en-US": "California|Texas|Ohio|New Jersey|Oregon|Colorado|Florida|Massachusetts|Illinois|"
             "Arizona|North Carolina|Michigan|Vermont|Georgia|Minnesota",
    "en-GB": "Yorkshire|Kent|Cornwall|the Cotswolds|Scotland|Wales|Northern Ireland|the Lake District|"
             "East Anglia|Devon",
    "en-IN": "Karnataka|Maharashtra|Tamil Nadu|Kerala|Telangana|Gujarat|Punjab|Rajasthan|West Bengal",
    "de-DE": "Bayern|Nordrhein-Westfalen|Sachsen|Baden-Württemberg|Hessen|Niedersachsen|Brandenburg",
    "fr-FR": "Bretagne|Normandie|Occitanie|Provence|Alsace|Île-de-France|Auvergne|Savoie",
    "es-ES": "Andalucía|Cataluña|Galicia|País Vasco|Castilla y León|Asturias|Aragón|Extremadura",
}
COUNTRIES = {
    "en": "United States|Canada|Mexico|Brazil|United Kingdom|Ireland|France|Germany|Spain|Portugal|"
          "Italy|the Netherlands|Belgium|Switzerland|Austria|Poland|India|Japan|China|South Korea|"
          "Nigeria|Kenya|Egypt|the United Arab Emirates|Australia|New Zealand|Singapore|Vietnam|"
          "Ukraine|Greece|Sweden|Norway|Argentina|Morocco",
    "de": "Deutschland|Österreich|der Schweiz|Frankreich|Spanien|Italien|Polen|den Niederlanden|"
          "der Türkei|Griechenland|Portugal|Dänemark|Tschechien|Kroatien",
    "fr": "France|Belgique|Suisse|Allemagne|Espagne|Italie|Maroc|Canada|Sénégal|Portugal|Tunisie|"
          "Luxembourg",
    "es": "España|Francia|Alemania|Portugal|México|Argentina|Colombia|Chile|Perú|Italia|Marruecos|"
          "Uruguay",
}
CITIES = {k: v.split("|") for k, v in CITIES.items()}
REGIONS = {k: v.split("|") for k, v in REGIONS.items()}
COUNTRIES = {k: v.split("|") for k, v in COUNTRIES.items()}

US_PLACES = [("Austin", "TX", "78704"), ("Portland", "OR", "97214"), ("Denver", "CO", "80205"),
             ("Columbus", "OH", "43215"), ("Brooklyn", "NY", "11215"), ("Chicago", "IL", "60614"),
             ("Seattle", "WA", "98103"), ("Atlanta", "GA", "30307"), ("San Jose", "CA", "95126"),
             ("Boston", "MA", "02116"), ("Nashville", "TN", "37206"), ("Minneapolis", "MN", "55408"),
             ("Phoenix", "AZ", "85004"), ("Raleigh", "NC", "27601"), ("Madison", "WI", "53703"),
             ("Oakland", "CA", "94610"), ("Tampa", "FL", "33606"), ("Ann Arbor", "MI", "48104")]
US_STREETS = "Maple|Oak|Cedar|Elm|Pine|Lakeview|Highland|Sunset|Riverside|Park|Hillcrest|Willow|" \
             "Chestnut|Franklin|Magnolia|Birch|Juniper|Orchard|Prospect|Grand".split("|")
US_SUFFIX = "Street|St|Avenue|Ave|Boulevard|Blvd|Drive|Dr|Lane|Road|Court|Way".split("|")
GB_PLACES = [("London", "SE1 7PB"), ("London", "N16 8JH"), ("Manchester", "M1 3BN"),
             ("Leeds", "LS6 2AB"), ("Bristol", "BS8 1TH"), ("Glasgow", "G12 8QQ"),
             ("Edinburgh", "EH8 9YL"), ("Cardiff", "CF10 3AT"), ("Birmingham", "B15 2TT"),
             ("Liverpool", "L7 8TX"), ("Nottingham", "NG7 2RD"), ("Brighton", "BN1 4GH"),
             ("Sheffield", "S10 2TN"), ("York", "YO10 5DD")]
GB_STREETS = "Kingsley Road|Station Road|Victoria Street|Church Lane|Mill Lane|Queen's Avenue|" \
             "Park Crescent|Albert Terrace|Granby Row|Whitworth Street|Elmwood Grove|" \
             "Chapel Walk|Harcourt Gardens|Meadow Close".split("|")
DE_PLACES = [("10115", "Berlin"), ("10437", "Berlin"), ("80331", "München"), ("20095", "Hamburg"),
             ("50667", "Köln"), ("60311", "Frankfurt am Main"), ("70173", "Stuttgart"),
             ("40213", "Düsseldorf"), ("04109", "Leipzig"), ("01067", "Dresden"),
             ("90402", "Nürnberg"), ("28195", "Bremen"), ("30159", "Hannover"), ("79098", "Freiburg")]
DE_STREETS = "Hauptstraße|Bahnhofstraße|Lindenallee|Schillerstraße|Goethestraße|Am Rosenhang|" \
             "Kastanienweg|Friedrichstraße|Berliner Straße|Mühlenweg|Gartenstraße|Schulstraße".split("|")
FR_PLACES = [("75011", "Paris"), ("75004", "Paris"), ("75017", "Paris"), ("69002", "Lyon"),
             ("13001", "Marseille"), ("31000", "Toulouse"), ("33000", "Bordeaux"), ("59000", "Lille"),
             ("44000", "Nantes"), ("67000", "Strasbourg"), ("34000", "Montpellier"),
             ("35000", "Rennes"), ("06000", "Nice")]
FR_STREETS = "rue des Lilas|rue de la République|avenue Jean Jaurès|boulevard Voltaire|" \
             "rue du Faubourg Saint-Antoine|allée des Tilleuls|rue Victor Hugo|" \
             "impasse des Peupliers|quai de la Loire|rue Pasteur|avenue de la Gare".split("|")
ES_PLACES = [("28013", "Madrid"), ("28001", "Madrid"), ("08007", "Barcelona"), ("08012", "Barcelona"),
             ("46002", "Valencia"), ("41004", "Sevilla"), ("48001", "Bilbao"), ("29015", "Málaga"),
             ("50001", "Zaragoza"), ("18009", "Granada"), ("37002", "Salamanca")]
ES_STREETS = "Calle Mayor|Calle de Alcalá|Avenida de la Constitución|Calle del Pez|Paseo de Gracia|" \
             "Calle Larios|Gran Vía|Calle San Vicente|Avenida Diagonal|Calle de Serrano|" \
             "Calle del Olmo".split("|")
IN_PLACES = [("Indiranagar", "Bengaluru", "560038"), ("Koramangala", "Bengaluru", "560034"),
             ("Andheri West", "Mumbai", "400053"), ("Baner", "Pune", "411045"),
             ("Banjara Hills", "Hyderabad", "500034"), ("Adyar", "Chennai", "600020"),
             ("Salt Lake", "Kolkata", "700091"), ("Vastrapur", "Ahmedabad", "380015"),
             ("Kakkanad", "Kochi", "682030"), ("Sector 62", "Noida", "201301"),
             ("Malviya Nagar", "Jaipur", "302017"), ("DLF Phase 3", "Gurugram", "122002")]
IN_BUILDINGS = "Sai Residency|Lotus Apartments|Green Glen Layout|Prestige Towers|Shanti Nivas|" \
               "Sunrise Enclave|Orchid Heights".split("|")

MAIL_DOMAINS = {
    "en-US": "gmail.com|outlook.com|yahoo.com|icloud.com|proton.me|fastmail.com|hey.com|"
             "mail.northwind-traders.com|corp.contoso.com|fabrikam.io|eng.globex.com",
    "en-GB": "gmail.com|outlook.com|btinternet.com|yahoo.co.uk|sky.com|hotmail.co.uk|"
             "nhs.example.org.uk|mail.harbourline.co.uk|tailspin.co.uk",
    "en-IN": "gmail.com|rediffmail.com|yahoo.co.in|outlook.com|mail.infovista.co.in|"
             "corp.saffronsoft.in|zohomail.in",
    "de-DE": "web.de|gmx.de|t-online.de|posteo.de|mailbox.org|gmail.com|vertrieb.nordlicht-gmbh.de|"
             "kanzlei-brandt.de",
    "fr-FR": "orange.fr|free.fr|laposte.net|gmail.com|sfr.fr|outlook.fr|compta.lesateliers-roux.fr|"
             "mairie-exemple.fr",
    "es-ES": "gmail.com|hotmail.es|telefonica.net|yahoo.es|outlook.es|clientes.ferreteria-sol.es|"
             "despacho-ortega.es",
}
MAIL_DOMAINS = {k: v.split("|") for k, v in MAIL_DOMAINS.items()}
MAIL_TAGS = "billing|invoices|newsletter|jobs|shop|trestle|receipts|travel|work|kids".split("|")

IP4_FIRST = [23, 31, 45, 52, 62, 77, 81, 88, 91, 103, 109, 117, 134, 141, 151, 163, 178, 185, 188,
             193, 202, 212, 213, 217]
IP6_PREFIX = ["2001:db8", "2a02:810d", "2600:1700", "2406:da18", "2a01:4f8", "2001:4860",
              "2a00:1450", "2604:a880", "2c0f:fb50"]

CARD_BRANDS = {
    # brand: (prefixes, length)
    "visa": (["4"], 16),
    "mastercard": (["51", "52", "53", "54", "55", "2221", "2300", "2720"], 16),
    "amex": (["34", "37"], 15),
    "discover": (["6011", "65", "644"], 16),
    "jcb": (["3528", "3540", "3566", "3589"], 16),
    "diners": (["36", "38"], 14),
    "unionpay": (["62"], 16),
    "maestro": (["6759", "5018"], 16),
}
CARD_BRAND_WEIGHTS = [("visa", 36), ("mastercard", 28), ("amex", 12), ("discover", 7), ("jcb", 5),
                      ("diners", 3), ("unionpay", 5), ("maestro", 4)]

LOCALE_COUNTRY = {"en-US": "US", "en-GB": "GB", "en-IN": "IN", "de-DE": "DE", "fr-FR": "FR",
                  "es-ES": "ES"}
LOCALE_LANG = {"en-US": "en", "en-GB": "en", "en-IN": "en", "de-DE": "de", "fr-FR": "fr",
               "es-ES": "es"}


def ascii_fold(s):
    s = s.replace("ß", "ss").replace("ł", "l").replace("Ł", "L").replace("ø", "o").replace("ı", "i")
    s = unicodedata.normalize("NFKD", s)
    return "".join(c for c in s if not unicodedata.combining(c))


class Person:
    def __init__(self, first, last, culture, gender):
        self.first, self.last, self.culture, self.gender = first, last, culture, gender

    @property
    def full(self):
        if self.culture in EAST:
            return "%s %s" % (self.last, self.first)
        return "%s %s" % (self.first, self.last)


class Gen:
    """Random value generators. `self.loc` is the row's locale."""

    def __init__(self, rng, loc, fmt="chat"):
        self.r = rng
        self.loc = loc
        self.fmt = fmt
        self.ctx = {}
        self.used = set()

    # -- helpers ----------------------------------------------------------
    def pick(self, seq):
        return self.r.choice(seq)

    def weighted(self, pairs):
        total = sum(w for _, w in pairs)
        x = self.r.uniform(0, total)
        for v, w in pairs:
            x -= w
            if x <= 0:
                return v
        return pairs[-1][0]

    def digits(self, n, first_nonzero=False):
        s = "".join(self.pick("0123456789") for _ in range(n))
        if first_nonzero and s[0] == "0":
            s = self.pick("123456789") + s[1:]
        return s

    # -- persons ------------------------------------------------------------
    def person(self, arg=None):
        culture, gender = None, None
        for a in (arg or "").split(","):
            if a in ("m", "f"):
                gender = a
            elif a == "any":
                culture = self.pick(sorted(NAMES))
            elif a in NAMES:
                culture = a
        if culture is None:
            culture = self.weighted(CULTURE_MIX[self.loc])
        if gender is None:
            gender = self.pick("mf")
        males, females, lasts = NAMES[culture]
        first = self.pick(males if gender == "m" else females)
        last = self.pick(lasts)
        if "|" in last:
            last = last.split("|")[0 if gender == "m" else 1]
        last = last.replace("_", " ")
        if culture == "es" and self.r.random() < 0.45:
            second = self.pick(lasts)
            if second != last:
                last = last + " " + second
        if culture == "zh" and self.r.random() < 0.5:
            return Person(first, last, "zh-west", gender)
        return Person(first, last, culture, gender)

    def email_for(self, p, tagged=None):
        f = ascii_fold(p.first).lower().replace(" ", "").replace("'", "")
        l = ascii_fold(p.last).lower().replace(" ", "").replace("'", "")
        style = self.r.randrange(8)
        if style == 0:
            local = "%s.%s" % (f, l)
        elif style == 1:
            local = "%s%s" % (f[0], l)
        elif style == 2:
            local = "%s_%s%s" % (f, l, self.r.randrange(10, 99))
        elif style == 3:
            local = "%s.%s" % (l, f)
        elif style == 4:
            local = "%s%s" % (f, l[0])
        elif style == 5:
            local = "%s.%s%d" % (f, l, self.r.randrange(1970, 2004))
        elif style == 6:
            local = "%s-%s" % (f, l)
        else:
            local = "%s.%s" % (f[0], l)
        if tagged or (tagged is None and self.r.random() < 0.12):
            local += "+" + self.pick(MAIL_TAGS)
        return local + "@" + self.pick(MAIL_DOMAINS[self.loc])

    # -- phones -------------------------------------------------------------
    def phone(self, region=None):
        region = region or LOCALE_COUNTRY[self.loc].lower()
        intl = False
        if region == "intl":
            region = self.pick(["us", "gb", "de", "fr", "es", "in", "jp", "au", "nl", "it", "ch",
                                "be", "ng", "ae", "br", "pl", "sg", "ca", "ie", "mx"])
            intl = True
        d = self.digits
        p = self.pick
        if region in ("us", "ca"):
            area = p(["212", "312", "415", "503", "512", "617", "646", "702", "718", "206", "303",
                      "404", "480", "602", "713", "919", "347", "773", "858", "978"] if region == "us"
                     else ["416", "604", "514", "613", "403"])
            if self.r.random() < 0.4:
                ex, line = "555", "01" + d(2)
            else:
                ex, line = p("23456789") + d(1) + p("023456789"), d(4)
            f = self.r.randrange(9) if not intl else self.pick([1, 4, 5])
            return ["(%s) %s-%s", "%s-%s-%s", "%s.%s.%s", "+1 %s-%s-%s", "+1 (%s) %s-%s",
                    "+1 %s %s %s", "1-%s-%s-%s", "%s%s%s", "+1%s%s%s"][f] % (area, ex, line)
        if region == "gb":
            kind = self.r.randrange(4)
            if kind == 0:
                nat, parts = "020", ("20", "7946 0" + d(3))
            elif kind == 1:
                mob = self.pick(["74", "75", "77", "78", "79"]) + self.pick("123456789") + d(1)
                nat, parts = "0" + mob, (mob, d(6))
            elif kind == 2:
                nat, parts = "0161", ("161", "496 0" + d(3))
            else:
                nat, parts = "0113", ("113", "496 0" + d(3))
            if intl or self.r.random() < 0.45:
                if kind == 0:
                    return p(["+44 20 %s", "+44 (0)20 %s", "+44 20 %s"]) % parts[1]
                if kind == 1:
                    return p(["+44 %s %s", "+44%s%s"]) % parts
                return "+44 %s %s" % parts
            if kind == 1:
                return nat + " " + parts[1]
            return nat + " " + parts[1]
        if region == "de":
            kind = self.r.randrange(4)
            if kind == 0:
                nat, rest = "30", p([d(6, True), d(7, True), d(8, True)])
            elif kind == 1:
                nat, rest = p(["89", "40", "221", "69", "711"]), d(3, True) + " " + d(4)
            elif kind == 2:
                nat, rest = p(["151", "160", "170", "176", "152"]), d(8, True)
            else:
                nat, rest = p(["30", "89", "40"]), d(5, True) + "-" + d(2)
            if intl or self.r.random() < 0.5:
                return p(["+49 %s %s", "+49 (0)%s %s", "+49 %s %s"]) % (nat, rest)
            if kind == 2:
                return "0%s %s" % (nat, rest)
            return p(["0%s %s", "0%s/%s", "0%s %s"]) % (nat, rest)
        if region == "fr":
            first = p(["6", "7", "1", "4", "5", "2", "9"])
            groups = [d(2) for _ in range(4)]
            if first == "7":
                groups[0] = p("3456789") + d(1)
            if first == "6" and groups[0] == "39":
                groups[0] = "38"
            if intl or self.r.random() < 0.4:
                return p(["+33 %s %s", "+33 (0)%s %s"]) % (first, " ".join(groups))
            sep = p([" ", " ", ".", ""])
            return "0" + first + sep + sep.join(groups)
        if region == "es":
            if self.r.random() < 0.55:
                pre = p(["6", "6", "6", "71", "72", "73", "74"])
                raw = pre + d(9 - len(pre))
                num = raw[:3] + " " + raw[3:6] + " " + raw[6:]
            else:
                num = p(["91", "93", "96", "95", "94"]) + " " + d(3) + " " + d(2) + " " + d(2)
            if intl or self.r.random() < 0.45:
                return p(["+34 %s", "+34 %s", "0034 %s"]) % num
            return num
        if region == "in":
            if self.r.random() < 0.7:
                m = p("6789") + d(4)
                rest = d(5)
                if intl:
                    return p(["+91 %s %s", "+91-%s-%s"]) % (m, rest)
                return p(["+91 %s %s", "+91-%s-%s", "%s %s", "0%s %s", "+91 %s%s", "%s%s"]) % (m, rest)
            std = p(["22", "80", "44", "11", "40", "33"])
            if intl or self.r.random() < 0.5:
                return "+91 %s %s %s" % (std, p("2346") + d(3), d(4))
            return "0%s-%s %s" % (std, p("2346") + d(3), d(4))
        if region == "jp":
            if self.r.random() < 0.5:
                a, b, c = "3", d(4), d(4)
            else:
                a, b, c = p(["90", "80", "70"]), d(4), d(4)
            if intl or self.r.random() < 0.5:
                return "+81 %s-%s-%s" % (a, b, c)
            return "0%s-%s-%s" % (a, b, c)
        if region == "au":
            return p(["+61 2 %s %s" % (d(4, True), d(4)), "+61 412 %s %s" % (d(3), d(3)),
                      "+61 3 9%s %s" % (d(3), d(4))])
        if region == "nl":
            return p(["+31 6 %s" % d(8), "+31 20 %s %s" % (d(3), d(4))])
        if region == "it":
            return p(["+39 06 %s %s" % (d(4), d(4)), "+39 347 %s %s" % (d(3), d(4)),
                      "+39 02 %s %s" % (d(4), d(4))])
        if region == "ch":
            return "+41 %s %s %s %s" % (p(["44", "22", "31", "79", "78"]), d(3), d(2), d(2))
        if region == "be":
            return p(["+32 2 %s %s %s" % (d(3), d(2), d(2)), "+32 470 %s %s %s" % (d(2), d(2), d(2))])
        if region == "ng":
            return "+234 %s %s %s" % (p(["803", "806", "813", "902", "708"]), d(3), d(4))
        if region == "ae":
            return "+971 %s %s %s" % (p(["50", "52", "55", "4"]), d(3), d(4))
        if region == "br":
            return "+55 11 9%s-%s" % (d(4), d(4))
        if region == "pl":
            return p(["+48 %s %s %s" % (p(["512", "601", "791", "695"]), d(3), d(3)),
                      "+48 22 %s %s %s" % (d(3), d(2), d(2))])
        if region == "sg":
            return "+65 %s %s" % (p(["6", "8", "9"]) + d(3), d(4))
        if region == "ie":
            return "+353 %s %s %s" % (p(["1", "87", "85", "21"]), d(3), d(4))
        if region == "mx":
            return "+52 55 %s %s" % (d(4), d(4))
        raise ValueError(region)

    # -- cards ----------------------------------------------------------------
    def card_digits(self, brand=None):
        brand = brand or self.weighted(CARD_BRAND_WEIGHTS)
        prefixes, length = CARD_BRANDS[brand]
        pre = self.pick(prefixes)
        body = pre + self.digits(length - len(pre) - 1)
        num = body + luhn_digit(body)
        assert luhn_ok(num)
        return num, brand

    def format_card(self, num, style=None):
        style = style if style is not None else self.pick([" ", " ", "-", ""])
        if style == "":
            return num
        n = len(num)
        if n == 15:
            groups = [num[:4], num[4:10], num[10:]]
        elif n == 14:
            groups = [num[:4], num[4:10], num[10:]]
        else:
            groups = [num[i:i + 4] for i in range(0, n, 4)]
        return style.join(groups)

    def card(self, arg=None):
        style = None
        brand = None
        for a in (arg or "").split(","):
            if a in CARD_BRANDS:
                brand = a
            elif a == "compact":
                style = ""
            elif a == "spaced":
                style = " "
            elif a == "dashed":
                style = "-"
        num, _ = self.card_digits(brand)
        return self.format_card(num, style)

    def bad_card(self, arg=None):
        num, _ = self.card_digits(self.pick(["visa", "mastercard", "discover", "visa"]))
        wrong = str((int(num[-1]) + self.r.randrange(1, 10)) % 10)
        num = num[:-1] + wrong
        assert not luhn_ok(num)
        return self.format_card(num, arg if arg is not None else None)

    # -- IBAN ---------------------------------------------------------------
    def bban(self, cc):
        d = self.digits
        p = self.pick
        if cc == "DE":
            return d(8, True) + d(10)
        if cc == "GB":
            return p(["NWBK", "BARC", "LOYD", "HBUK", "MIDL", "MONZ", "SRLG"]) + d(6) + d(8)
        if cc == "IE":
            return p(["AIBK", "BOFI", "IPBS"]) + d(6) + d(8)
        if cc == "NL":
            return p(["ABNA", "INGB", "RABO", "TRIO", "KNAB", "SNSB"]) + d(10)
        if cc == "AT":
            return d(5, True) + d(11)
        if cc == "PL":
            return d(8, True) + d(16)
        if cc == "CH":
            return p(["00762", "00700", "08390", "00235"]) + d(12)
        if cc == "BE":
            first = d(10, True)
            chk = int(first) % 97 or 97
            return first + "%02d" % chk
        if cc == "FR":
            bank, branch, acct = d(5, True), d(5), d(11)
            key = 97 - ((89 * int(bank) + 15 * int(branch) + 3 * int(acct)) % 97)
            return bank + branch + acct + "%02d" % key
        if cc == "ES":
            bank, branch, acct = p(["2100", "0049", "0182", "2080", "0081", "2038"]), d(4), d(10)
            w = [1, 2, 4, 8, 5, 10, 9, 7, 3, 6]

            def dc(s):
                v = 11 - sum(int(c) * w[i] for i, c in enumerate(s)) % 11
                return {11: 0, 10: 1}.get(v, v)
            return bank + branch + "%d%d" % (dc("00" + bank + branch), dc(acct)) + acct
        if cc == "IT":
            abi, cab, acct = p(["03069", "02008", "05034", "01030"]), d(5), d(12)
            odd = [1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22,
                   25, 24, 23]
            s = abi + cab + acct
            total = sum(odd[int(c)] if i % 2 == 0 else int(c) for i, c in enumerate(s))
            return chr(ord("A") + total % 26) + s
        if cc == "PT":
            return d(21)
        if cc == "LU":
            return d(3) + d(13)
        raise ValueError(cc)

    def iban_compact(self, cc):
        bban = self.bban(cc)
        iban = cc + iban_check_digits(cc, bban) + bban
        assert iban_ok(iban), iban
        return iban

    @staticmethod
    def group4(s):
        return " ".join(s[i:i + 4] for i in range(0, len(s), 4))

    def iban(self, arg=None):
        cc, style = None, None
        for a in (arg or "").split(","):
            if a in ("c", "compact"):
                style = "c"
            elif a in ("g", "grouped"):
                style = "g"
            elif len(a) == 2:
                cc = a
        if cc is None:
            cc = {"en-US": self.pick(["DE", "GB", "NL", "FR", "IE", "ES", "IT", "CH"]),
                  "en-GB": self.pick(["GB", "GB", "GB", "IE", "DE", "FR", "NL"]),
                  "en-IN": self.pick(["GB", "DE", "NL", "FR", "AT"]),
                  "de-DE": self.pick(["DE", "DE", "DE", "AT", "CH", "NL", "PL"]),
                  "fr-FR": self.pick(["FR", "FR", "FR", "BE", "LU", "CH", "DE"]),
                  "es-ES": self.pick(["ES", "ES", "ES", "PT", "FR", "IT"])}[self.loc]
        s = self.iban_compact(cc)
        if style is None:
            style = "g" if self.r.random() < 0.6 else "c"
        return self.group4(s) if style == "g" else s

    def bad_iban(self, arg=None):
        cc = arg or self.pick(["DE", "GB", "FR", "NL", "ES", "IT"])
        good = self.iban_compact(cc)
        chk = int(good[2:4])
        bad = self.pick([v for v in range(2, 99) if (v - chk) % 97 != 0])
        s = good[:2] + "%02d" % bad + good[4:]
        assert not iban_ok(s)
        return self.group4(s) if self.r.random() < 0.6 else s

    # -- SSN ------------------------------------------------------------------
    def ssn(self, arg=None):
        while True:
            area = self.r.randrange(1, 900)
            if area != 666:
                break
        group = self.r.randrange(1, 100)
        serial = self.r.randrange(1, 10000)
        a, g, s = "%03d" % area, "%02d" % group, "%04d" % serial
        style = arg or self.weighted([("dash", 80), ("space", 10), ("compact", 10)])
        out = {"dash": "%s-%s-%s", "space": "%s %s %s", "compact": "%s%s%s"}[style] % (a, g, s)
        assert ssn_ok(out)
        return out

    def bad_ssn(self, arg=None):
        kind = arg or self.pick(["000", "666", "9xx", "9xx", "g00", "s0000"])
        area = "%03d" % self.r.randrange(1, 900)
        if area == "666":
            area = "665"
        group, serial = "%02d" % self.r.randrange(1, 100), "%04d" % self.r.randrange(1, 10000)
        if kind == "000":
            area = "000"
        elif kind == "666":
            area = "666"
        elif kind == "9xx":
            area = "9" + self.digits(2)
        elif kind == "g00":
            group = "00"
        else:
            serial = "0000"
        out = "%s-%s-%s" % (area, group, serial)
        assert not ssn_ok(out)
        return out

    # -- IP -------------------------------------------------------------------
    def ip4(self, arg=None):
        kind = arg or self.weighted([("public", 55), ("doc", 20), ("private", 25)])
        r = self.r.randrange
        if kind == "doc":
            return self.pick(["192.0.2.%d", "198.51.100.%d", "203.0.113.%d"]) % r(1, 255)
        if kind == "private":
            return self.pick(["10.%d.%d.%d" % (r(0, 256), r(0, 256), r(1, 255)),
                              "192.168.%d.%d" % (r(0, 256), r(2, 255)),
                              "172.%d.%d.%d" % (r(16, 32), r(0, 256), r(1, 255))])
        return "%d.%d.%d.%d" % (self.pick(IP4_FIRST), r(0, 256), r(0, 256), r(1, 255))

    def ip6(self, arg=None):
        style = arg or self.weighted([("compressed", 60), ("full", 25), ("linklocal", 15)])
        h = lambda: "%x" % self.r.randrange(0, 0x10000)
        if style == "linklocal":
            groups = ["fe80", "0", "0", "0", h(), h(), h(), h()]
        else:
            groups = self.pick(IP6_PREFIX).split(":") + [h(), h()]
            zeros = self.r.randrange(1, 4) if style == "compressed" else self.r.randrange(0, 3)
            groups += ["0"] * zeros
            while len(groups) < 8:
                groups.append(h())
            groups = groups[:8]
        addr = ipaddress.IPv6Address(":".join(groups))
        if style == "full":
            return addr.exploded
        return addr.compressed

    def ip(self, arg=None):
        return self.ip6() if self.r.random() < 0.3 else self.ip4()

    # -- locations ------------------------------------------------------------
    def city(self, arg=None):
        if arg == "world":
            return self.pick(CITIES["world"])
        if arg in CITIES:
            return self.pick(CITIES[arg])
        return self.pick(CITIES[self.loc])

    def region(self, arg=None):
        return self.pick(REGIONS[arg or self.loc])

    def country(self, arg=None):
        return self.pick(COUNTRIES[arg or LOCALE_LANG[self.loc]])

    def address(self, arg=None):
        c = (arg or LOCALE_COUNTRY[self.loc]).upper()
        r = self.r.randrange
        p = self.pick
        if c == "US":
            city, st, z = p(US_PLACES)
            unit = p(["", "", "", ", Apt %d%s" % (r(1, 20), p("ABCD")), " Suite %d" % r(100, 900)])
            return "%d %s %s%s, %s, %s %s" % (r(10, 9800), p(US_STREETS), p(US_SUFFIX), unit, city,
                                              st, z)
        if c == "GB":
            city, pc = p(GB_PLACES)
            flat = p(["", "", "Flat %d, " % r(1, 12)])
            return "%s%d %s, %s %s" % (flat, r(1, 180), p(GB_STREETS), city, pc)
        if c == "DE":
            pc, city = p(DE_PLACES)
            return "%s %d%s, %s %s" % (p(DE_STREETS), r(1, 140), p(["", "", "a", "b"]), pc, city)
        if c == "FR":
            pc, city = p(FR_PLACES)
            return "%d%s %s, %s %s" % (r(1, 120), p(["", "", " bis"]), p(FR_STREETS), pc, city)
        if c == "ES":
            pc, city = p(ES_PLACES)
            floor = p(["", ", %dº %s" % (r(1, 8), p("ABCD")), ", %dº %dª" % (r(1, 6), r(1, 4))])
            return "%s %d%s, %s %s" % (p(ES_STREETS), r(1, 150), floor, pc, city)
        if c == "IN":
            area, city, pin = p(IN_PLACES)
            return p(["Flat %d, %s, %s, %s %s" % (r(101, 1204), p(IN_BUILDINGS), area, city, pin),
                      "No. %d, %s Main Road, %s, %s %s" % (r(1, 90), p(["1st", "2nd", "3rd", "5th",
                                                                         "11th"]), area, city, pin),
                      "H.No. %d-%d-%d, %s, %s - %s" % (r(1, 12), r(1, 9), r(10, 400), area, city,
                                                        pin)])
        raise ValueError(c)

    # -- hard negatives -------------------------------------------------------
    def neg(self, kind, arg=None):
        r = self.r.randrange
        p = self.pick
        d = self.digits
        if kind == "order":
            return p(["ORD-%d-%06d" % (r(2022, 2026), r(1, 999999)), "#%d" % r(100000000, 999999999),
                      "SO-%d-%05d" % (r(2022, 2026), r(1, 99999)), "A%s-%s" % (d(7), d(2))])
        if kind == "invoice":
            return p(["INV-%d-%04d" % (r(2022, 2026), r(1, 9999)), "INV%s" % d(8),
                      "%d/%04d" % (r(2022, 2026), r(1, 9999))])
        if kind == "badcard":
            return self.bad_card(arg)
        if kind == "badiban":
            return self.bad_iban(arg)
        if kind == "badssn":
            return self.bad_ssn(arg)
        if kind == "track":
            kind2 = arg or p(["ups", "usps", "fedex", "dhl"])
            if kind2 == "ups":
                return "1Z" + "".join(p("0123456789ABCDEFGHJKLMNPRSTUVWXY") for _ in range(6)) + \
                       d(2) + d(8)
            if kind2 == "usps":
                s = "9400" + d(18)
                return self.group4(s) if self.r.random() < 0.6 else s
            if kind2 == "fedex":
                return p(["%s %s %s" % (d(4), d(4), d(4)), d(12)])
            return "JD01%s" % d(16)
        if kind == "ver":
            if arg == "tag":
                return "v%d.%d.%d" % (r(0, 5), r(0, 30), r(0, 20))
            if arg == "plain":
                return "%d.%d.%d" % (r(1, 9), r(0, 40), r(0, 20))
            if arg == "chrome":
                return "%d.0.%d.%d" % (r(110, 130), r(5000, 6999), r(10, 250))
            if arg == "fw":  # four small parts: looks like an IPv4 address, is not one
                return "%d.%d.%d.%d" % (r(1, 9), r(0, 20), r(0, 10), r(1, 99))
            if arg == "win":
                return "10.0.%d" % r(17763, 26100)
            return p(["v%d.%d.%d" % (r(0, 5), r(0, 30), r(0, 20)), "%d.%d.%d" % (r(1, 20), r(0, 99),
                                                                                   r(0, 300)),
                      "10.0.%d" % r(17763, 26100), "%d.0.%d.%d" % (r(110, 130), r(5000, 6999),
                                                                   r(10, 250))])
        if kind == "date":
            y, m, dd = r(2019, 2026), r(1, 13), r(1, 29)
            if arg == "clf":
                return "%02d/%s/%d" % (dd, "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()[m - 1], y)
            if arg == "iso" or self.fmt in ("json", "csv", "log", "code", "config"):
                return "%d-%02d-%02d" % (y, m, dd)
            if self.loc == "en-US":
                return p(["%d-%02d-%02d" % (y, m, dd), "%02d/%02d/%d" % (m, dd, y)])
            if self.loc.startswith("de"):
                return p(["%02d.%02d.%d" % (dd, m, y), "%d-%02d-%02d" % (y, m, dd)])
            return p(["%d-%02d-%02d" % (y, m, dd), "%02d/%02d/%d" % (dd, m, y)])
        if kind == "time":
            if arg == "hms":
                return "%02d:%02d:%02d" % (r(0, 24), r(0, 60), r(0, 60))
            return "%02d:%02d" % (r(7, 21), p([0, 0, 15, 30, 45, r(0, 60)]))
        if kind == "price":
            amt = round(math.exp(self.r.uniform(math.log(3), math.log(4000))), 2)
            if arg == "small":
                amt = round(self.r.uniform(3, 60), 2)
            elif arg == "big":
                amt = round(self.r.uniform(350, 3800), 2)
            if self.fmt == "csv":  # plain numbers in CSV cells
                s = "%.2f" % amt
                return s if LOCALE_LANG[self.loc] == "en" else s.replace(".", ",")
            if self.loc == "en-US":
                return "$%s" % "{:,.2f}".format(amt)
            if self.loc == "en-GB":
                return "£%s" % "{:,.2f}".format(amt)
            if self.loc == "en-IN":
                return "₹%s" % "{:,.0f}".format(amt * 80)
            s = "{:,.2f}".format(amt).replace(",", "X").replace(".", ",").replace("X", ".")
            return s + " €"
        if kind == "sku":
            return p(["SKU-%s-%s" % ("".join(p("ABCDEFGHKMNPRSTWX") for _ in range(3)), d(4)),
                      "%s-%s-%s" % (d(3), d(3), "".join(p("ABCDEFGH") for _ in range(2))),
                      "PN %s-%s" % (d(5), d(3))])
        if kind == "isbn":
            s = isbn13(self.r)
            return p([s, "%s-%s-%s-%s-%s" % (s[:3], s[3], s[4:7], s[7:12], s[12])])
        if kind == "hash":
            n = int(arg or p(["40", "64", "7", "12", "32"]))
            return "".join(p("0123456789abcdef") for _ in range(n))
        if kind == "uuid":
            h = lambda n: "".join(p("0123456789abcdef") for _ in range(n))
            return "%s-%s-4%s-%s%s-%s" % (h(8), h(4), h(3), p("89ab"), h(3), h(12))
        if kind == "port":
            if arg == "eph":
                return str(r(32768, 61000))
            return str(p([443, 8080, 8443, 5432, 6379, 3000, 9200, 27017, 11434, 22, 3306]))
        if kind == "status":
            return str(p([200, 201, 204, 301, 302, 400, 401, 403, 404, 409, 429, 500, 502, 503, 504]))
        if kind == "ticket":
            return p(["INC%07d" % r(1, 9999999), "CS-%d-%05d" % (r(2023, 2026), r(1, 99999)),
                      "#%d" % r(10000, 99999), "%s-%d" % (p(["PAY", "OPS", "SEC", "WEB", "API"]),
                                                          r(100, 9999))])
        if kind == "num":
            n = int(arg or 6)
            return d(n, True)
        if kind == "bic":
            return p(["DEUTDEFF", "COBADEFFXXX", "BARCGB22", "NWBKGB2L", "INGBNL2A", "BNPAFRPP",
                      "CAIXESBBXXX", "UBSWCHZH80A", "AIBKIE2D", "BCITITMM", "GEBABEBB"])
        if kind == "exp":
            return "%02d/%02d" % (r(1, 13), r(25, 31))
        if kind == "amount":
            return str(r(100, 99999))
        raise ValueError(kind)


TOKEN = re.compile(r"\[\[([A-Z_]+):(.+?)\]\]|\{\{(!?)([a-z0-9_]+)(?::([A-Za-z0-9_,-]+))?(?:@([a-z0-9]+))?\}\}")

LABELLED = {
    "name": "PERSON", "first": "PERSON", "last": "PERSON", "email": "EMAIL_ADDRESS",
    "phone": "PHONE_NUMBER", "card": "CREDIT_CARD", "iban": "IBAN_CODE", "ssn": "US_SSN",
    "ip4": "IP_ADDRESS", "ip6": "IP_ADDRESS", "ip": "IP_ADDRESS", "city": "LOCATION",
    "region": "LOCATION", "country": "LOCATION", "addr": "LOCATION",
}


def produce(g, neg, kind, arg, key):
    """Return the string for one placeholder."""
    if neg:
        ck = ("!" + kind, arg, key)
        if key and ck in g.ctx:
            return g.ctx[ck]
        v = g.neg(kind, arg)
        if key:
            g.ctx[ck] = v
        return v
    if kind in ("name", "first", "last", "email") and key:
        pk = ("person", key)
        if pk not in g.ctx:
            for _ in range(20):
                person = g.person(arg if kind != "email" else None)
                if not {person.full, person.first, person.last} & g.used:
                    break
            g.used.update([person.full, person.first, person.last])
            g.ctx[pk] = person
        person = g.ctx[pk]
        if kind == "name":
            return person.full
        if kind == "first":
            return person.first
        if kind == "last":
            return person.last
        ek = ("email", key)
        if ek not in g.ctx:
            g.ctx[ek] = g.email_for(person, tagged=True if arg == "tag" else None)
        return g.ctx[ek]
    ck = (kind, arg, key)
    if key and ck in g.ctx:
        return g.ctx[ck]
    for _ in range(20):  # avoid e.g. "from Leeds to Leeds" or one name twice in a CSV
        v = fresh(g, kind, arg)
        if v not in g.used:
            break
    g.used.add(v)
    if key:
        g.ctx[ck] = v
    return v


def fresh(g, kind, arg):
    if kind in ("name", "first", "last"):
        person = g.person(arg)
        v = {"name": person.full, "first": person.first, "last": person.last}[kind]
    elif kind == "email":
        v = g.email_for(g.person(), tagged=True if arg == "tag" else None)
    elif kind == "phone":
        v = g.phone(arg)
    elif kind == "card":
        v = g.card(arg)
    elif kind == "iban":
        v = g.iban(arg)
    elif kind == "ssn":
        v = g.ssn(arg)
    elif kind == "ip4":
        v = g.ip4(arg)
    elif kind == "ip6":
        v = g.ip6(arg)
    elif kind == "ip":
        v = g.ip(arg)
    elif kind == "city":
        v = g.city(arg)
    elif kind == "region":
        v = g.region(arg)
    elif kind == "country":
        v = g.country(arg)
    elif kind == "addr":
        v = g.address(arg)
    else:
        raise ValueError("unknown placeholder kind %r" % kind)
    return v


def render(template, loc, rng, fmt="chat"):
    g = Gen(rng, loc, fmt)
    out, ents, pos, last = [], [], 0, 0
    for m in TOKEN.finditer(template):
        lit = template[last:m.start()]
        out.append(lit)
        pos += len(lit)
        last = m.end()
        if m.group(1):
            etype, val, labelled = m.group(1), m.group(2), True
            assert etype in ENTITIES, etype
        else:
            neg, kind, arg, key = m.group(3) == "!", m.group(4), m.group(5), m.group(6)
            val = produce(g, neg, kind, arg, key)
            labelled = not neg
            etype = LABELLED.get(kind)
        if labelled and etype == "LOCATION":
            # convention: a leading article is not part of a place name's span
            for art in ("the ", "der ", "den ", "die "):
                if val.startswith(art):
                    out.append(art)
                    pos += len(art)
                    val = val[len(art):]
                    break
        if labelled:
            ents.append({"entity": etype, "start": pos, "end": pos + len(val), "value": val})
        out.append(val)
        pos += len(val)
    out.append(template[last:])
    text = "".join(out)
    assert "{{" not in text and "]]" not in text, text
    return text, ents


# ---------------------------------------------------------------------------
# templates
# ---------------------------------------------------------------------------

TEMPLATES = []
EN = "en"  # any of en-US / en-GB / en-IN, chosen per instance
EN_MIX = [("en-US", 50), ("en-GB", 30), ("en-IN", 20)]


def T(loc, fmt, text, n=2, tricky=False):
    """Register a template. n = number of instances; tricky = contains non-PII look-alikes."""
    TEMPLATES.append({"loc": loc, "fmt": fmt, "text": text, "n": n,
                      "tricky": tricky or "{{!" in text})

# ---- English: chat messages and prompts sent to an assistant ---------------------------------

T(EN, "chat", "Hi, I'm {{name@a}} and I can't log in. My account email is {{email@a}} and the "
  "reset link never arrives. Could someone call me on {{phone}}?")
T(EN, "chat", "can you rewrite this so it sounds less angry: '{{first@a}}, this is the third time "
  "the delivery to {{addr}} has been missed. I want my money back.'")
T(EN, "chat", "Summarise this for me please. From {{name@a}} <{{email@a}}>: the Q3 numbers are in "
  "the shared drive, and {{name@b}} will present them at the {{city}} offsite.")
T(EN, "chat", "My name is {{name}}, I booked room 412 for three nights starting {{!date}} and was "
  "charged twice, {{!price}} each time. Order ref {{!order}}.")
T(EN, "chat", "Translate to Spanish: 'Dear {{name}}, your appointment at our {{city}} clinic is "
  "confirmed for Tuesday at {{!time}}. Please bring photo ID.'")
T(EN, "chat", "pls help, my card {{card}} was declined at checkout but the money left my account. "
  "I'm in {{country}} right now if that matters")
T(EN, "chat", "Write a short LinkedIn recommendation for {{name@a}}. {{first@a}} worked with me for "
  "four years at our {{city}} office and led the migration to Kubernetes.")
T(EN, "chat", "What's the best way to tell my landlord, {{name:m@a}}, that the boiler at "
  "{{addr}} is broken again? He only answers texts on {{phone}}.")
T(EN, "chat", "Here's my CV header, make it look more professional:\n{{name@a}}\n{{addr}}\n"
  "{{phone}} | {{email@a}}")
T(EN, "chat", "I need a cover letter for a nursing job in {{city}}. I'm {{name}}, 8 years "
  "in paediatrics, currently in {{city:world}}.")
T(EN, "chat", "Hey! Quick q - my sister {{first:f@a}} is flying from {{city:world}} to "
  "{{city}} on the 14th, what's the cheapest way from the airport to the city centre?")
T(EN, "chat", "is it safe to send my IBAN {{iban}} to a buyer on a marketplace app? they asked "
  "for it to 'verify' the payment")
T(EN, "chat", "Draft an out-of-office: I'm away until the 3rd. For urgent matters contact "
  "{{name@a}} at {{email@a}} or {{phone}}.")
T(EN, "chat", "Could you check the grammar? 'Me and {{first@a}} was in {{city}} last week visiting "
  "{{first@b}}'s parents, they live near {{region}}.'")
T(EN, "chat", "I got a text from {{phone:intl}} saying my parcel is held at customs and I need to "
  "pay {{!price}}. Tracking number {{!track}}. Is this a scam?")
T(EN, "chat", "Make a packing list for a week in {{city:world}} and then two days in "
  "{{city:world}}. Travelling with my partner {{first}}.")
T(EN, "chat", "the wifi guy gave me this IP for the printer {{ip4:private}} but I can't reach it "
  "from my laptop, what should I try?")
T(EN, "chat", "Can you explain why my VPN shows my location as {{country}} when I'm actually in "
  "{{city}}? The exit IP is {{ip4:public}}.")
T(EN, "chat", "Please turn this into a table: {{name@a}} - {{phone@p}} - {{city@c}}; {{name@b}} - "
  "{{phone@q}} - {{city@d}}; {{name@e}} - {{phone@r}} - {{city@f}}", n=2)
T(EN, "chat", "I'm writing a wedding speech for my brother {{first:m@a}} and his fiancée "
  "{{first:f@b}}. They met hiking in {{region}}. Something funny but not embarrassing?")
T(EN, "chat", "Is {{email}} a real support address or phishing? The mail says my account "
  "will be closed in 24 hours.")
T(EN, "chat", "help me reply to {{name@a}}, they want the invoice resent to {{email@a}} "
  "instead of the old address")
T(EN, "chat", "My mum {{name:f}} needs to update her address to {{addr}} with the bank. What "
  "documents will they ask for?")
T(EN, "chat", "Thanks {{first}}! Let's do a call tomorrow, I'm on {{phone}} all afternoon.", n=2)
T(EN, "chat", "convert these to E.164: {{phone:us}}, {{phone:gb}}, {{phone:in}}")
T(EN, "chat", "Which of these numbers are valid IBANs? {{iban@x}} and {{!badiban}} - the second "
  "one came from a scanned form", tricky=True)
T(EN, "chat", "Remind me what {{name}} said about the {{city}} lease in yesterday's call. Was "
  "the deposit {{!price:big}} or more?")
T("en-US", "chat", "I'm filling out a W-4 and my SSN is {{ssn}}, do I put my spouse {{name}} on "
  "line 3 or not?")
T("en-US", "chat", "My dad {{name:m}} passed away last month. The bank wants his Social "
  "Security number ({{ssn}}) and a death certificate. What else do I need?")
T("en-GB", "chat", "Can you help me write to the council? I'm at {{addr:GB}} and the bins haven't "
  "been collected for three weeks. My number is {{phone:gb}}.")
T("en-IN", "chat", "Please draft a leave application to my manager {{name@a}}. I'm travelling to "
  "{{city}} for my cousin's wedding from the 12th to 18th.")
T("en-IN", "chat", "My landlord in {{city}} is asking for rent to {{phone:in}} via UPI and also "
  "wants my Aadhaar copy. Is that normal?")

# ---- English: e-mails ------------------------------------------------------------------------

T(EN, "email", "Hi {{first@a}},\n\nThanks for your order {{!order}}. We'll ship it to {{addr}} "
  "within two working days.\n\nBest,\n{{name@b}}\nCustomer Care")
T(EN, "email", "Subject: Re: refund\n\nDear {{name@a}},\n\nWe have processed your refund of "
  "{{!price}} to the account ending {{!num:4}}. If you have questions, reply to this email or "
  "call {{phone}}.\n\nKind regards,\n{{name@b}}", tricky=True)
T(EN, "email", "From: {{name@a}} <{{email@a}}>\nTo: {{name@b}} <{{email@b}}>\nSubject: "
  "intro\n\n{{first@b}}, meet {{name:f@c}} - she runs the {{city}} lab. I think you two should talk.")
T(EN, "email", "Hello,\n\nPlease update our supplier record with the new bank details:\nIBAN: "
  "{{iban}}\nAccount holder: {{name}}\n\nInvoice {{!invoice}} should be paid to this account.\n\nThanks")
T(EN, "email", "Hey team - {{first@a}} is out sick today. If anything comes up with the "
  "{{city}} customer, ping {{first@b}} or me on {{phone}}.")
T(EN, "email", "Dear Dr. {{last@a}},\n\nI'm writing to request a copy of my medical records. "
  "My date of birth is {{!date}} and I now live at {{addr}}.\n\nYours sincerely,\n{{name@b}}")
T(EN, "email", "Good morning {{first@a}},\n\nAttached is the signed lease for {{addr}}. The "
  "deposit of {{!price:big}} has been transferred from {{iban}}.\n\nRegards,\n{{name@b}}\n{{phone}}")
T(EN, "email", "Hi all,\n\nReminder that the office in {{city}} is closed on Monday. Facilities "
  "questions go to {{email}}.\n\nCheers,\n{{first}}")
T(EN, "email", "--\n{{name@a}}\nSenior Account Manager\n{{addr}}\nT: {{phone@p}}\nM: {{phone}}\n"
  "{{email@a}}")
T(EN, "email", "Dear Mr {{last:m@a}},\n\nYour card ending in {{!num:4}} will expire soon. The "
  "replacement card will be sent to the address we hold for you in {{city}}.\n\n{{name@b}}\n"
  "Fraud Prevention Team", tricky=True)
T(EN, "email", "{{first@a}} - the contractor's IP is {{ip4:public}}, can you whitelist it on the "
  "staging firewall before Thursday? Thanks, {{first@b}}")
T("en-US", "email", "Hi {{first@a}},\n\nFor the background check we need the candidate's full "
  "name, SSN and current address. Here is what {{name@b}} sent us:\nSSN: {{ssn}}\nAddress: "
  "{{addr:US}}\n\nPlease store this in the HR system only.\n\n{{name@c}}")
T("en-US", "email", "Dear {{name@a}},\n\nThis confirms your 401(k) rollover request. The last "
  "four digits of your SSN ({{!num:4}}) and your phone {{phone}} are on file.\n\nPlan "
  "Administration", tricky=True)
T("en-GB", "email", "Hi {{first@a}},\n\nCould you pop round to {{addr:GB}} on Saturday to look at "
  "the damp in the back bedroom? Best number to reach me is {{phone:gb}}.\n\nTa,\n{{first@b}}")
T("en-GB", "email", "Dear {{name@a}},\n\nPlease pay the outstanding balance of {{!price}} to sort "
  "code {{!num:2}}-{{!num:2}}-{{!num:2}}, or by IBAN {{iban:GB}}. Quote reference "
  "{{!invoice}}.\n\nAccounts, {{city}}", tricky=True)
T("en-IN", "email", "Dear {{name@a}},\n\nWe are happy to offer you the role of Data Analyst at our "
  "{{city}} office. Please confirm by replying to {{email@b}} or calling {{name@b}} on "
  "{{phone:in}}.\n\nHR Team")
T("en-IN", "email", "Respected Sir/Madam,\n\nI, {{name@a}}, residing at {{addr:IN}}, request you to "
  "update my mobile number to {{phone:in}} in your records.\n\nThanking you,\n{{name@a}}")

# ---- English: support tickets ---------------------------------------------------------------

T(EN, "ticket", "Ticket {{!ticket}}\nCustomer: {{name@a}} ({{email@a}})\nIssue: charged twice "
  "for order {{!order}}, amount {{!price}}.\nAgent note: refund approved by {{first@b}}.")
T(EN, "ticket", "[{{!ticket}}] Login loop on iOS app {{!ver:plain}}\nReporter: {{email}}\nDevice: "
  "iPhone 14, iOS 17.4.1\nSteps: open app, tap Sign in, get bounced back.\nNo PII beyond reporter.")
T(EN, "ticket", "Caller {{name}} says the technician never showed up at {{addr}}. "
  "Callback number {{phone}}. Priority: high.")
T(EN, "ticket", "Customer wants to change the payout account from {{iban@old}} to {{iban@new}}. "
  "Verified identity via call to {{phone}}. Pending approval from {{name}}.")
T(EN, "ticket", "Escalation: user {{email}} reports unknown logins from {{ip4:public}} and "
  "{{ip6}}. Password reset forced at {{!time}} UTC. Case {{!ticket}}.")
T(EN, "ticket", "Status: resolved\nSummary: The card {{card}} was flagged by the fraud model "
  "(score 0.93) after a purchase in {{city:world}}. Customer {{name}} confirmed it was genuine.")
T(EN, "ticket", "Subject: wrong name on invoice\n\nThe invoice {{!invoice}} says {{name@a}} but "
  "it should be {{name@b}}. Company address unchanged ({{addr}}).")
T(EN, "ticket", "Guest {{name}} left a passport at reception in our {{city}} hotel. Contact on "
  "booking: {{phone:intl}} / {{email}}. Booking {{!order}}.")
T("en-US", "ticket", "Identity verification failed for applicant {{name@a}}: SSN {{ssn}} does not "
  "match the name on file. Applicant lives in {{region:en-US}}.")
T("en-US", "ticket", "Payroll ticket {{!ticket}}: employee {{name}} (SSN {{ssn}}) has the wrong "
  "state withholding - moved from {{region}} to {{region}} in March.")

# ---- English: model answers -----------------------------------------------------------------

T(EN, "answer", "Sure! Here's a polished version of your email:\n\nDear {{name@a}},\n\nThank "
  "you for meeting with me in {{city}} last week. I've attached the proposal we discussed. I'm "
  "happy to answer any questions at {{phone}}.\n\nBest regards,\n{{name@b}}")
T(EN, "answer", "Based on the document, the key contacts are:\n- **{{name@a}}**, project lead "
  "({{email@a}})\n- **{{name@b}}**, finance ({{email@b}})\n- **{{name@c}}**, site manager in "
  "{{city}}")
T(EN, "answer", "I can't verify whether {{email}} belongs to your bank, but legitimate banks "
  "never ask you to confirm a full card number like {{card}} by email. Call the number printed on "
  "the back of your card instead.")
T(EN, "answer", "Here is the table you asked for:\n\n| Name | City | Phone |\n|---|---|---|\n| "
  "{{name}} | {{city}} | {{phone}} |\n| {{name}} | {{city}} | {{phone}} |")
T(EN, "answer", "The IBAN {{iban}} has the right length and its check digits are valid, so "
  "it will pass format validation. That doesn't prove the account belongs to {{name}} though.")
T(EN, "answer", "{{city}} is a great choice for a weekend trip! Start with the old town and the market, "
  "keep Sunday for a museum, and if you have a spare day, head out to {{region}}.")
T(EN, "answer", "The log shows repeated failed SSH logins from {{ip4:public}} starting at "
  "{{!time}} UTC. That address is not in your allow-list; I'd block it and rotate the key for "
  "user deploy.")
T("en-US", "answer", "I've filled in the form fields from your message:\n\nFull name: {{name}}\n"
  "SSN: {{ssn}}\nAddress: {{addr:US}}\nPhone: {{phone:us}}\n\nPlease double-check before "
  "submitting.")

# ---- server logs ----------------------------------------------------------------------------

T(EN, "log", '{{ip4}} - - [{{!date:clf}}:{{!time:hms}} +0000] "POST /api/v1/login HTTP/1.1" {{!status}} '
  '512 "-" "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/{{!ver:chrome}}"', n=3)
T(EN, "log", "{{!date:iso}}T{{!time:hms}}Z INFO auth: login ok user={{email}} src={{ip4}}:{{!port}} "
  "session={{!uuid}}", n=3)
T(EN, "log", "{{!date:iso}} {{!time:hms}} WARN payment-svc: card validation failed pan={{!badcard}} "
  "reason=luhn request_id={{!uuid}}", tricky=True)
T(EN, "log", "{{!date:iso}} {{!time:hms}} ERROR payment-svc: unmasked PAN in request body: "
  "card_number={{card:compact}} merchant=M-{{!num:6}} trace={{!hash:32}}")
T(EN, "log", "[{{!date:iso}} {{!time:hms}}] sshd[{{!num:5}}]: Failed password for invalid user admin "
  "from {{ip4:public}} port {{!port:eph}} ssh2")
T(EN, "log", "[{{!date:iso}} {{!time:hms}}] sshd[{{!num:5}}]: Accepted publickey for deploy from "
  "{{ip6}} port {{!port:eph}} ssh2: ED25519 SHA256:{{!hash:32}}")
T(EN, "log", "level=info ts={{!date:iso}}T{{!time:hms}}Z msg=\"upstream request\" client=[{{ip6:compressed}}]:{{!port}} "
  "model=gpt-4o latency_ms={{!num:3}} status={{!status}}")
T(EN, "log", "{{!time:hms}} DEBUG mailer: queued message to={{email}} cc={{email}} template=welcome "
  "id={{!uuid}}")
T(EN, "log", "{{!date:iso}} {{!time:hms}} trestle::proxy: request from {{ip4}} forwarded to "
  "127.0.0.1:{{!port}} (version {{!ver}})", tricky=True)
T(EN, "log", "kernel: [UFW BLOCK] IN=eth0 OUT= SRC={{ip4:public}} DST={{ip4:private}} LEN=60 "
  "TOS=0x00 PROTO=TCP SPT={{!port:eph}} DPT={{!port}}", n=2)
T(EN, "log", "Jan 12 {{!time:hms}} web-3 nginx: {{ip6:full}} - - \"GET /healthz HTTP/2.0\" {{!status}} 2 "
  "\"-\" \"kube-probe/1.29\"")
T(EN, "log", "{{!date:iso}} {{!time:hms}} WARN pii-guard: prompt contained phone={{phone}} and "
  "email={{email}}; redacted before forwarding (tenant=acme, req={{!uuid}})")
T(EN, "log", "audit: user {{email}} exported 1,204 rows from table customers at {{!time}} from "
  "{{ip}}; export id {{!uuid}}")
T("en-US", "log", "{{!date:iso}} {{!time:hms}} ERROR kyc-worker: SSA verification mismatch ssn={{ssn}} "
  "name=\"{{name}}\" dob={{!date}} attempt=3")
T("en-US", "log", "{{!date:iso}} {{!time:hms}} INFO kyc-worker: rejected test ssn={{!badssn}} (invalid "
  "area) from sandbox client {{ip4:doc}}", tricky=True)
T(EN, "log", "{{!date:iso}} {{!time:hms}} INFO dhcpd: DHCPACK on {{ip4:private}} to "
  "{{!hash:2}}:{{!hash:2}}:{{!hash:2}}:{{!hash:2}}:{{!hash:2}}:{{!hash:2}} (laptop-{{!num:4}}) via eth1",
  tricky=True)

# ---- CSV rows ---------------------------------------------------------------------------------

T("en-US", "csv", "employee_id,full_name,ssn,state,start_date\nE{{!num:5}},{{name}},{{ssn}},{{region}},"
  "{{!date}}\nE{{!num:5}},{{name}},{{ssn}},{{region}},{{!date}}\nE{{!num:5}},{{name}},{{ssn}},"
  "{{region}},{{!date}}", n=3)
T(EN, "csv", "order_id,customer,email,total,status\n{{!order}},{{name@a}},{{email@a}},{{!price}},"
  "shipped\n{{!order}},{{name@b}},{{email@b}},{{!price}},refunded", n=2)
T(EN, "csv", "payee,iban,amount,reference\n{{name}},{{iban:c}},{{!amount}}.00,{{!invoice}}\n"
  "{{name}},{{iban:c}},{{!amount}}.50,{{!invoice}}\n{{name}},{{iban:c}},{{!amount}}.00,{{!invoice}}",
  n=2)
T(EN, "csv", "ts,src_ip,dst_port,bytes,action\n{{!date:iso}} {{!time:hms}},{{ip4}},{{!port}},{{!num:4}},"
  "ALLOW\n{{!date:iso}} {{!time:hms}},{{ip4}},{{!port}},{{!num:5}},DENY\n{{!date:iso}} {{!time:hms}},{{ip6}},"
  "{{!port}},{{!num:3}},ALLOW", n=2)
T(EN, "csv", "name,phone,city\n{{name}},{{phone}},{{city}}\n{{name}},{{phone}},{{city}}\n"
  "{{name}},{{phone:intl}},{{city:world}}", n=2)
T(EN, "csv", "sku,description,qty,unit_price\n{{!sku}},USB-C cable 2m,40,{{!price:small}}\n{{!sku}},"
  "Apple Watch band (M/L),12,{{!price:small}}\n{{!sku}},Kindle Paperwhite case,8,{{!price:small}}", n=2)
T(EN, "csv", "txn_id,card,exp,amount,country\n{{!uuid}},{{card}},{{!exp}},"
  "{{!price}},{{country}}\n{{!uuid}},{{card}},{{!exp}},{{!price}},{{country}}", n=2)
T(EN, "csv", "isbn,title,author,year\n{{!isbn}},The Silent Orchard,{{name}},2019\n{{!isbn}},"
  "Notes from a Small Harbour,{{name}},2022", n=1)
T(EN, "csv", "ticket,opened,priority,component\n{{!ticket}},{{!date}},P2,billing\n{{!ticket}},"
  "{{!date}},P1,auth\n{{!ticket}},{{!date}},P3,search", n=2)
T("en-GB", "csv", "member_no,surname,forename,town,mobile,joined\nM{{!num:6}},{{last@a}},{{first@a}},"
  "{{city}},{{phone:gb}},{{!date}}\nM{{!num:6}},{{last@b}},{{first@b}},{{city}},{{phone:gb}},{{!date}}", n=2)

# ---- JSON snippets ----------------------------------------------------------------------------

T(EN, "json", '{"user": {"id": {{!num:7}}, "name": "{{name@a}}", "email": "{{email@a}}", '
  '"phone": "{{phone}}"}, "plan": "pro", "created_at": "{{!date}}"}', n=3)
T(EN, "json", '{"event": "payment.failed", "amount": {{!amount}}, "currency": "EUR", '
  '"payer": {"name": "{{name}}", "iban": "{{iban:c}}"}, "id": "{{!uuid}}"}', n=2)
T(EN, "json", '{"request_id": "{{!uuid}}", "client_ip": "{{ip}}", "user_agent": '
  '"curl/{{!ver:plain}}", "status": {{!status}}, "duration_ms": {{!num:3}}}', n=2)
T(EN, "json", '{"shipping": {"recipient": "{{name}}", "address": "{{addr}}", "phone": '
  '"{{phone}}"}, "tracking": "{{!track}}", "order": "{{!order}}"}', n=3)
T("en-US", "json", '{"applicant": {"first_name": "{{first@a}}", "last_name": "{{last@a}}", '
  '"ssn": "{{ssn}}", "dob": "{{!date}}"}, "loan_amount": {{!amount}}, "state": "{{region}}"}', n=2)
T(EN, "json", '{"messages": [{"role": "user", "content": "My card {{card}} got charged twice, '
  'can you help?"}], "model": "claude-3-5-sonnet", "max_tokens": 512}', n=2)
T(EN, "json", '{"version": "{{!ver}}", "build": "{{!hash:7}}", "commit": "{{!hash:40}}", '
  '"released": "{{!date}}", "checksum": "sha256:{{!hash:64}}"}', n=2)
T(EN, "json", '{"server": {"bind": "0.0.0.0", "port": {{!port}}, "upstreams": ["{{ip4:private}}:'
  '{{!port}}", "{{ip4:private}}:{{!port}}"]}, "log_level": "info"}', n=2, tricky=True)
T(EN, "json", '[{"attendee": "{{name}}", "city": "{{city:world}}"}, {"attendee": "{{name}}", '
  '"city": "{{city:world}}"}, {"attendee": "{{name}}", "city": "{{city:world}}"}]', n=2)

# ---- form dumps -------------------------------------------------------------------------------

T("en-US", "form", "First name: {{first@a}}\nLast name: {{last@a}}\nSSN: {{ssn}}\nDate of birth: "
  "{{!date}}\nStreet address: {{addr:US}}\nPhone: {{phone:us}}\nEmail: {{email@a}}", n=3)
T(EN, "form", "name={{name@a}}&email={{email@a}}&phone={{phone}}&message=please call me back"
  "&consent=true&utm_source=newsletter", n=2)
T(EN, "form", "Cardholder name: {{name}}\nCard number: {{card}}\nExpiry: {{!exp}}\n"
  "CVV: ***\nBilling city: {{city}}\nCountry: {{country}}", n=3)
T(EN, "form", "Beneficiary: {{name}}\nIBAN: {{iban}}\nBIC: {{!bic}}\nAmount: {{!price}}\n"
  "Reference: {{!invoice}}", n=2)
T(EN, "form", "Emergency contact\nName: {{name}}\nRelationship: spouse\nPhone: {{phone}}\n"
  "Alt. phone: {{phone:intl}}", n=2)
T("en-GB", "form", "Title: Ms\nFull name: {{name:f}}\nAddress: {{addr:GB}}\nPreferred "
  "contact: mobile\nMobile: {{phone:gb}}", n=2)
T("en-IN", "form", "Applicant Name: {{name@a}}\nFather's Name: {{name:m}}\nPermanent Address: "
  "{{addr:IN}}\nMobile No.: {{phone:in}}\nEmail ID: {{email@a}}\nApplication No.: {{!invoice}}", n=3)
T(EN, "form", "Device registration\nOwner: {{name}}\nSerial: {{!sku}}\nFirmware: {{!ver:fw}}\n"
  "LAN IP: {{ip4:private}}\nMAC: 3c:22:fb:{{!hash:2}}:{{!hash:2}}:{{!hash:2}}", n=2)

# ---- code snippets ----------------------------------------------------------------------------

T(EN, "code", "# TODO: remove before merge\nTEST_USER = {\n    \"email\": \"{{email}}\",\n    "
  "\"card\": \"{{card:compact}}\",\n    \"phone\": \"{{phone}}\",\n}\n", n=2)
T(EN, "code", "def test_rejects_bad_luhn():\n    assert not is_valid_card(\"{{!badcard}}\")\n\n"
  "def test_accepts_valid():\n    assert is_valid_card(\"{{card}}\")\n", n=2, tricky=True)
T(EN, "code", "ALLOWED_IPS = [\n    \"{{ip4}}\",\n    \"{{ip4}}\",\n    \"{{ip6}}\",\n]\nTIMEOUT_S = "
  "30\nVERSION = \"{{!ver}}\"\n", n=2)
T(EN, "code", "curl -X POST https://api.example.com/v2/customers \\\n  -H 'Authorization: Bearer "
  "sk_test_{{!hash:24}}' \\\n  -d '{\"name\": \"{{name@a}}\", \"email\": \"{{email@a}}\"}'", n=2)
T(EN, "code", "INSERT INTO customers (id, full_name, email, phone, city) VALUES\n  ({{!num:4}}, "
  "'{{name@a}}', '{{email@a}}', '{{phone}}', '{{city}}'),\n  ({{!num:4}}, '{{name@b}}', '{{email@b}}', "
  "'{{phone}}', '{{city}}');", n=2)
T(EN, "code", "// fixture: valid and invalid IBANs for the validator\nconst VALID = \"{{iban:c}}\";\n"
  "const INVALID = \"{{!badiban}}\"; // wrong check digits\n", n=2, tricky=True)
T("en-US", "code", "# seed data for staging, NOT real people\nusers = [\n    (\"{{name}}\", "
  "\"{{ssn}}\"),\n    (\"{{name}}\", \"{{ssn}}\"),\n]\nINVALID_SSNS = [\"{{!badssn:000}}\", "
  "\"{{!badssn:666}}\", \"{{!badssn:9xx}}\"]\n", n=2)
T(EN, "code", "git clone git@github.com:acme/trestle-config.git\ncd trestle-config && git checkout "
  "{{!ver:tag}}\nexport UPSTREAM={{ip4:private}}:{{!port}}\n", n=2, tricky=True)
T(EN, "code", "server {\n    listen {{!port}};\n    server_name app.internal;\n    allow {{ip4}};\n"
  "    allow {{ip6}};\n    deny all;\n}\n", n=2)

# ---- German ---------------------------------------------------------------------------------

DE = "de-DE"
T(DE, "chat", "Hallo, ich bin {{name@a}} und komme nicht mehr in mein Konto. Die hinterlegte "
  "Adresse ist {{email@a}}, erreichbar bin ich unter {{phone}}.", n=3)
T(DE, "email", "Sehr geehrte Frau {{last:f@a}},\n\nanbei die Rechnung {{!invoice}} über "
  "{{!price}}. Bitte überweisen Sie den Betrag bis zum {{!date}} auf folgendes Konto:\nIBAN: "
  "{{iban:DE}}\nKontoinhaber: {{name@b}}\n\nMit freundlichen Grüßen\n{{name@b}}", n=3)
T(DE, "email", "Hallo {{first@a}},\n\nkannst du am Samstag beim Umzug helfen? Die neue Adresse: "
  "{{addr:DE}}. Ruf mich kurz an: {{phone}}.\n\nLG {{first@b}}", n=2)
T(DE, "ticket", "Kunde {{name}} meldet, dass das Paket {{!track}} seit einer Woche in {{city}} "
  "im Verteilzentrum liegt. Rückruf unter {{phone}} erbeten. Bestellung {{!order}}.", n=2)
T(DE, "chat", "Kannst du diesen Text kürzen? 'Herr {{last:m@a}} aus {{city}} hat sich "
  "beschwert, dass seine Kreditkarte {{card}} zweimal belastet wurde.'", n=2)
T(DE, "form", "Vorname: {{first@a}}\nNachname: {{last@a}}\nStraße, Hausnr., PLZ, Ort: {{addr:DE}}\n"
  "Telefon: {{phone}}\nE-Mail: {{email@a}}\nIBAN: {{iban}}", n=3)
T(DE, "email", "Liebe Frau Dr. {{last:f@a}},\n\nvielen Dank für das Gespräch in {{city}}. Wie "
  "besprochen schicke ich Ihnen die Unterlagen bis Freitag. Version {{!ver:plain}} des Angebots ist "
  "angehängt.\n\nBeste Grüße\n{{name@b}}", n=2)
T(DE, "log", "{{!date:iso}} {{!time:hms}} WARNUNG anmeldung: 5 Fehlversuche für {{email}} von "
  "{{ip4}}, Konto gesperrt bis {{!time}}", n=2)
T(DE, "answer", "Gern! Hier ist eine formelle Kündigung:\n\n{{name@a}}\n{{addr:DE}}\n\nSehr "
  "geehrte Damen und Herren,\n\nhiermit kündige ich meinen Vertrag (Kundennummer {{!num:8}}) "
  "fristgerecht zum nächstmöglichen Zeitpunkt.\n\nMit freundlichen Grüßen\n{{name@a}}", n=2)
T(DE, "chat", "Meine Oma {{first:f}} wohnt in {{region}} und bekommt ständig Anrufe von "
  "{{phone:intl}}, angeblich vom Finanzamt. Was soll sie tun?", n=2)
T(DE, "csv", "Name;IBAN;Betrag;Verwendungszweck\n{{name}};{{iban:DE,c}};{{!price:big}};Miete "
  "März\n{{name}};{{iban:DE,c}};{{!price}};Nebenkosten\n{{name}};{{iban:AT,c}};{{!price}};Kaution",
  n=2)
T(DE, "ticket", "Störung: Router {{!sku}} (Firmware {{!ver:fw}}) beim Kunden {{name}} in {{city}} "
  "nicht erreichbar, letzte bekannte IP {{ip4}}. Techniker {{first}} ist informiert.", n=2)
T(DE, "chat", "Ist die IBAN {{!badiban:DE}} gültig? Das Formular sagt 'Prüfziffer falsch', "
  "aber ich habe sie vom Brief von {{name}} abgeschrieben.", n=2)
T(DE, "email", "Guten Tag,\n\nmein Name ist {{name@a}}, ich bin zum 1. Mai umgezogen. "
  "Bitte ändern Sie meine Anschrift auf {{addr:DE}}.\n\nDanke und viele Grüße\n"
  "{{name@a}}", n=2)

# ---- French ---------------------------------------------------------------------------------

FR = "fr-FR"
T(FR, "chat", "Bonjour, je m'appelle {{name@a}}. Je n'arrive plus à me connecter, mon adresse "
  "est {{email@a}}. Vous pouvez me rappeler au {{phone}} ?", n=3)
T(FR, "email", "Madame {{last:f@a}},\n\nVeuillez trouver ci-joint la facture {{!invoice}} d'un "
  "montant de {{!price}}, à régler par virement sur le compte suivant :\nIBAN : {{iban:FR}}\n"
  "Titulaire : {{name@b}}\n\nCordialement,\n{{name@b}}", n=3)
T(FR, "email", "Salut {{first@a}},\n\nOn se retrouve samedi chez {{first@b}}, au {{addr:FR}}. "
  "Si tu te perds, appelle-moi au {{phone}}.\n\nBises,\n{{first@c}}", n=2)
T(FR, "ticket", "Le client {{name}} signale que son colis {{!track}} est bloqué à {{city}} "
  "depuis le {{!date}}. Commande {{!order}}. Rappel souhaité au {{phone}}.", n=2)
T(FR, "form", "Nom : {{last@a}}\nPrénom : {{first@a}}\nAdresse : {{addr:FR}}\nTéléphone : "
  "{{phone}}\nCourriel : {{email@a}}\nIBAN : {{iban}}", n=3)
T(FR, "chat", "Tu peux reformuler ça ? « M. {{last:m@a}}, de {{city}}, conteste un paiement "
  "par carte {{card}}. Pays de la transaction : {{country}}. »", n=2)
T(FR, "answer", "Voici une lettre de résiliation :\n\n{{name@a}}\n{{addr:FR}}\n\nMadame, "
  "Monsieur,\n\nPar la présente, je vous informe de ma décision de résilier mon abonnement "
  "(référence {{!num:9}}).\n\nVeuillez agréer mes salutations distinguées.\n{{name@a}}", n=2)
T(FR, "log", "{{!date:iso}} {{!time:hms}} AVERTISSEMENT connexion refusée pour {{email}} depuis "
  "{{ip}} (tentative 4/5)", n=2)
T(FR, "chat", "Ma grand-mère {{name:f}} habite en {{region}} et reçoit des SMS du {{phone}} "
  "qui lui demandent de payer une amende de {{!price}}. C'est une arnaque ?", n=2)
T(FR, "csv", "nom;iban;montant;libellé\n{{name}};{{iban:FR,c}};{{!price}};loyer avril\n"
  "{{name}};{{iban:BE,c}};{{!price}};remboursement\n{{name}};{{iban:FR,c}};{{!price}};caution", n=2)
T(FR, "email", "Bonjour {{first@a}},\n\nLa réunion avec Mme {{last:f@b}} est déplacée à "
  "{{city}}, mardi à {{!time}}. La salle est réservée sous le numéro {{!order}}.\n\n{{first@c}}", n=2)
T(FR, "ticket", "Incident {{!ticket}} : la box du client {{name}} à {{city}} ne répond plus, "
  "dernière IP connue {{ip6}}. Firmware {{!ver:fw}}.", n=2)

# ---- Spanish ----------------------------------------------------------------------------------

ES = "es-ES"
T(ES, "chat", "Hola, soy {{name@a}} y no puedo entrar en mi cuenta. Mi correo es {{email@a}} y "
  "mi móvil {{phone}}. ¿Me podéis ayudar?", n=3)
T(ES, "email", "Estimada Sra. {{last:f@a}}:\n\nLe adjuntamos la factura {{!invoice}} por importe "
  "de {{!price}}. Puede abonarla mediante transferencia a la cuenta {{iban:ES}} a nombre de "
  "{{name@b}}.\n\nUn saludo,\n{{name@b}}", n=3)
T(ES, "email", "Hola {{first@a}}:\n\nEl sábado celebramos el cumple de {{first@b}} en casa, "
  "{{addr:ES}}. Si no encuentras el portal, llámame al {{phone}}.\n\nUn abrazo,\n{{first@c}}", n=2)
T(ES, "ticket", "El cliente {{name}} indica que el envío {{!track}} lleva cinco días parado en "
  "{{city}}. Pedido {{!order}}. Prefiere que le llamen al {{phone}}.", n=2)
T(ES, "form", "Nombre: {{first@a}}\nApellidos: {{last@a}}\nDirección: {{addr:ES}}\nTeléfono: "
  "{{phone}}\nCorreo electrónico: {{email@a}}\nIBAN: {{iban}}", n=3)
T(ES, "chat", "¿Puedes resumir esto? 'D. {{name:m@a}}, vecino de {{city}}, reclama un cargo "
  "duplicado en su tarjeta {{card}} realizado en {{country}}.'", n=2)
T(ES, "answer", "Aquí tienes un modelo de reclamación:\n\n{{name@a}}\n{{addr:ES}}\n\nMuy "
  "señores míos:\n\nLes escribo para reclamar el reembolso del pedido {{!order}} por importe de "
  "{{!price}}.\n\nAtentamente,\n{{name@a}}", n=2)
T(ES, "log", "{{!date:iso}} {{!time:hms}} AVISO acceso denegado para {{email}} desde {{ip}}, "
  "intento 3 de 5", n=2)
T(ES, "chat", "Mi abuela {{name:f}} vive en {{region}} y le llegan SMS del {{phone:intl}} "
  "diciendo que tiene una multa de {{!price}}. ¿Es una estafa?", n=2)
T(ES, "csv", "titular;iban;importe;concepto\n{{name}};{{iban:ES,c}};{{!price:big}};alquiler mayo\n"
  "{{name}};{{iban:ES,c}};{{!price}};fianza\n{{name}};{{iban:PT,c}};{{!price}};reembolso", n=2)
T(ES, "email", "Buenos días, {{first@a}}:\n\nLa reunión con {{name@b}} se traslada a la oficina "
  "de {{city}} el jueves a las {{!time}}. La referencia de la sala es {{!order}}.\n\nSaludos,\n"
  "{{first@c}}", n=2)
T(ES, "ticket", "Incidencia {{!ticket}}: el router del cliente {{name}} en {{city}} no "
  "responde; última IP conocida {{ip4}}. Firmware {{!ver:fw}}.", n=2)

# ---- hand-written one-off texts: ambiguous words, names, places -------------------------------


def F(loc, fmt, text, tricky=False):
    T(loc, fmt, text, n=1, tricky=tricky)


F("en-GB", "chat", "Will you ask [[PERSON:Will Turner]] to join the standup? I will be late - my "
  "train from [[LOCATION:Reading]] is stuck outside [[LOCATION:Slough]] again.", tricky=True)
F("en-US", "email", "[[PERSON:Grace]], just a reminder that the grace period on your Pro plan ends "
  "on May 3. After that the card on file is charged $49.00 a month.", tricky=True)
F("en-US", "chat", "Can you ask [[PERSON:May Chen]] whether the May release notes are ready? The "
  "build is tagged v4.2.0 and QA signed off on Monday.", tricky=True)
F("en-US", "chat", "We took the kids to the [[LOCATION:Lincoln Memorial]] and then walked to the "
  "[[LOCATION:Washington Monument]]. My phone died so I couldn't call [[PERSON:Lincoln]] to meet "
  "us.", tricky=True)
F("en-US", "chat", "My Apple Watch keeps disconnecting from my iPhone 15 since the watchOS 10.4 "
  "update. The replacement band from Amazon Prime arrives Thursday, order 112-4417809-3356201.",
  tricky=True)
F("en-US", "chat", "Is [[LOCATION:Jordan]] safe to visit in October? I'm flying from "
  "[[LOCATION:Chicago]] to [[LOCATION:Amman]] and want to see [[LOCATION:Petra]]. Also are Air "
  "Jordan 1s fine for the hike?", tricky=True)
F("en-US", "chat", "Turkey or ham for Christmas dinner? My in-laws are flying in from "
  "[[LOCATION:Turkey]] and I want to impress them.", tricky=True)
F("en-GB", "chat", "Brussels sprouts, French fries and a Denver omelette - rate my weird lunch "
  "out of 10.", tricky=True)
F("en-US", "chat", "We're going to [[LOCATION:Paris]] in April and [[PERSON:April]] is coming "
  "too, so we need a room for three from April 12 to 16.", tricky=True)
F("en-GB", "email", "Could you ask [[PERSON:Hope Adeyemi]] whether there's any hope of getting "
  "the Sunday shift covered? Otherwise we close at 4pm.", tricky=True)
F("en-US", "ticket", "[[PERSON:Mark]], please mark this ticket as resolved and bill the customer "
  "- the bill is $1,299.00 (invoice INV-2024-0457).", tricky=True)
F("en-US", "answer", "The Washington Post piece on wildfire season in [[LOCATION:Washington]] "
  "state quotes Dr. [[PERSON:Elena Vázquez]], a fire ecologist based in [[LOCATION:Spokane]].",
  tricky=True)
F("en-US", "note", "Q2 OKRs: ship v2.14.3 by June 30, cut p95 latency below 250 ms, close "
  "INC0049127 and SEC-4410. Owner: platform team. Budget: $18,500.")
F("en-US", "note", "Order ORD-2024-118833 shipped via UPS, tracking 1Z999AA10123456784, ETA "
  "2024-03-15. Second box: USPS 9400 1000 0000 0000 0000 00.")
F("en-US", "chat", "After updating to Windows 10.0.19045.4291 my Dell dock stopped working. "
  "Support told me to roll the dock firmware back to 4.2.1.10 and try again.")
F("en-US", "ticket", "Applicant typed 000-12-3456 in the SSN field and the form rejected it. Asked "
  "them to re-enter; new value pending.")
F("en-US", "note", "Apple, Amazon and Ford all reported earnings on Thursday; Ford said F-150 "
  "Lightning deliveries were up 40% quarter over quarter.")
F("en-US", "email", "Sincerely,\nThe Johnson & Johnson Benefits Team\nPlease do not reply to this "
  "message. Reference: BEN-2024-88123.")
F("en-GB", "chat", "Meet me at [[LOCATION:221B Baker Street, London]] at 7? It's a museum now, "
  "tickets are £16.", tricky=True)
F("en-US", "code", "npm i -D @types/node@20.11.5 && git remote add origin "
  "git@github.com:acme/api.git && git push -u origin main")
F("en-GB", "chat", "omg [[PERSON:Aisha]] 😂 did you see [[PERSON:Tunde]]'s message?? he's moving to "
  "[[LOCATION:Abuja]] 🎉🎉")
F("en-US", "email", "Hi, it's [[PERSON:Bill]]. The bill for June is attached - can you check "
  "whether the total ($1,299.00) matches PO-77812?", tricky=True)
F("en-GB", "note", "[[PERSON:Rose]] planted roses along the fence at [[LOCATION:14 Elm Close, "
  "Harrogate HG1 2QL]] - remind me to send a thank-you card.", tricky=True)
F("en-US", "note", "Sunday, Monday and Tuesday are blocked; the holiday party is Friday the 13th "
  "at the usual place. RSVP by Dec 1.", tricky=True)
F("en-US", "ticket", "Ticket #555-0199-22 was merged into #555-0199-31. Both concern the hinge "
  "replacement, part 020-7946-11, warranty code 4155550132.", tricky=True)
F("de-DE", "note", "Sendungsnummer 00340434161234567890, Bestellung vom 15.03.2024, Summe 49,90 €, "
  "Artikel 4260417893125.", tricky=True)
F("en-US", "email", "Thank you for contacting Prime Video support. Your case number is "
  "13572468-0912 and it was updated on 03/15/2024 at 2:41 PM.", tricky=True)
F("en-US", "log", "2024-03-15 14:32:07 INFO redteam: 48/48 prompts refused ('I can't share "
  "personal data'); suite=pii-v3 commit=9f2c1e7 duration=812s")
F("en-US", "email", "We noticed a sign-in from a new device (Chrome 124.0.6367.91 on macOS 14.4.1). "
  "If this was you, no action is needed.", tricky=True)
F("en-US", "chat", "[[PERSON:Georgia Whitfield]] grew up in [[LOCATION:Savannah]], "
  "[[LOCATION:Georgia]], then moved to [[LOCATION:Tbilisi]] - so she's lived in both Georgias.",
  tricky=True)
F("en-GB", "chat", "[[PERSON:Florence Nakamura]] is visiting [[LOCATION:Florence]] next week, can "
  "you recommend a trattoria near the [[LOCATION:Duomo]]?", tricky=True)
F("en-US", "chat", "[[PERSON:Austin]] says the [[LOCATION:Austin]] office closes early on Friday "
  "because of the marathon.", tricky=True)
F("en-IN", "chat", "Bhai [[PERSON:Rohit]], kal [[LOCATION:Pune]] aa raha hai kya? Mera naya "
  "number {{phone:in}} hai, purana wala band ho gaya.")
F("en-GB", "email", "Prof. [[PERSON:Adebayo]] asked whether the viva can move to 14:00. Dr "
  "[[PERSON:Okonkwo]] is external examiner and travels from [[LOCATION:Birmingham]].")
F("en-US", "note", "Mr. [[PERSON:Takahashi]] will meet Ms. [[PERSON:Lefèvre]] at the "
  "[[LOCATION:Osaka]] branch on the 9th; interpreter booked.")
F("en-GB", "chat", "My passport expired on 15/03/2024 and the new one was issued in "
  "[[LOCATION:Lagos]]. Do I need to update my visa application?", tricky=True)
F("en-GB", "chat", "Two weeks in the [[LOCATION:Dolomites]] then the ferry from "
  "[[LOCATION:Livorno]] to [[LOCATION:Corsica]] - is that too much for a 10-day trip?")
F("en-US", "note", "The Lincoln Navigator and the Ford Ranger both failed the side-impact test; "
  "Mercedes-Benz and Tesla passed.", tricky=True)
F("en-US", "chat", "Mercedes called - not the car company, [[PERSON:Mercedes Ortega]] from "
  "accounting. She needs the receipts by Friday.", tricky=True)
F("en-GB", "email", "[[PERSON:Summer]] asked if the summer rota applies to the [[LOCATION:Leeds]] "
  "team as well. I said yes from June.", tricky=True)
F("en-US", "chat", "lol [[PERSON:Chase Holloway]] (yes he works at Chase) approved my overdraft "
  "in like five minutes", tricky=True)
F("en-GB", "note", "Flight BA 0117 departs [[LOCATION:Heathrow]] Terminal 5 at 18:25, gate closes "
  "at 17:55, seat 34K.", tricky=True)
F("de-DE", "email", "Bitte überweisen Sie 12.400,00 € bis zum 31.05.2024. BIC: DEUTDEFFXXX, "
  "Verwendungszweck: Projekt 2024-117.", tricky=True)
F("en-US", "log", "docker0: bridge [[IP_ADDRESS:172.17.0.1]] netmask 255.255.0.0 broadcast "
  "172.17.255.255; container web_1 got [[IP_ADDRESS:172.17.0.5]]", tricky=True)
F("en-US", "chat", "The app works on localhost (127.0.0.1 and ::1) port 8080 but not when I bind "
  "to 0.0.0.0 - why?", tricky=True)
F("en-US", "note", "Release 1.2.3-beta.4+build.5678 replaces CalVer 2024.03.15; checksum "
  "3f786850e387550fdab836ed7e6dc881de23001b.")
F("en-US", "chat", "hey its [[PERSON:jake]] from the gym, got ur number from [[PERSON:sam]] - u "
  "still selling the bike?")
F("en-US", "form", "ATTN: [[PERSON:MARIA GONZALEZ]]\n[[LOCATION:1420 MAPLE AVE, AUSTIN, TX 78704]]\n"
  "RE: ACCOUNT 0049-2231 PAST DUE", tricky=True)
F("de-DE", "email", "Sehr geehrte Frau [[PERSON:Anna-Lena von der Heide]],\n\nIhr Termin in "
  "[[LOCATION:Lübeck]] wurde auf Mittwoch, 10:30 Uhr verschoben.")
F("es-ES", "chat", "¿Sabes si [[PERSON:Juan Carlos de la Fuente]] sigue en [[LOCATION:Valladolid]]? "
  "Le quiero invitar a la boda en [[LOCATION:Cádiz]].")
F("en-GB", "email", "Dear [[PERSON:Abdullah bin Khalid Al-Farsi]],\n\nYour visa appointment in "
  "[[LOCATION:Muscat]] is confirmed for 09:15. Please bring the original passport.")
F("en-US", "answer", "[[PERSON:Marie Curie]] did most of her research in [[LOCATION:Paris]], "
  "where she and [[PERSON:Pierre Curie]] discovered polonium and radium in 1898.")
F("en-US", "chat", "the cafe on [[LOCATION:Martin Luther King Jr. Boulevard]] is closed, meet at "
  "the one by [[LOCATION:Lake Merritt]] instead?", tricky=True)
F("en-GB", "chat", "The Victoria line is suspended so take the Overground to "
  "[[LOCATION:Highbury & Islington]] and walk from there.", tricky=True)
F("en-US", "chat", "I ordered a book about the [[LOCATION:Amazon]] rainforest from Amazon and "
  "it arrived in a box the size of a fridge.", tricky=True)
F("en-US", "ticket", "Customer asked to be called at [[PHONE_NUMBER:(212) 555-0178 ext. 3041]] "
  "between 2 and 4 pm ET. Case 00412877.", tricky=True)
F("en-GB", "email", "Switchboard: [[PHONE_NUMBER:+44 20 7946 0321 ext. 118]]\nOut of hours: "
  "[[PHONE_NUMBER:07700 900417]]\n[[LOCATION:Granby Row, Manchester M1 7AX]]")
F("en-US", "email", "Call me at [[PHONE_NUMBER:+1 617-555-0144 x22]] or e-mail "
  "[[EMAIL_ADDRESS:ops-alerts+pager@mail.eu-west.trestle.dev]]; I'm on call until Sunday.")
F("en-US", "log", "GET http://[[IP_ADDRESS:203.0.113.54]]:8080/admin 401 from "
  "[[IP_ADDRESS:198.51.100.23]] ua=\"python-requests/2.31.0\"", tricky=True)
F("en-US", "log", "conn from [[IP_ADDRESS:::ffff:203.0.113.7]] accepted; upstream "
  "[[IP_ADDRESS:fe80::1ff:fe23:4567:890a]]%eth0 selected", tricky=True)
F("en-US", "chat", "wait is Siri a person or the iPhone thing? my coworker [[PERSON:Siri "
  "Nordahl]] keeps getting asked that", tricky=True)
F("en-GB", "note", "The Jubilee line, the Elizabeth line and the Northern line are all part-"
  "suspended this weekend; allow extra time.")
F("en-US", "chat", "Does [[PERSON:Frank]] know that the frank feedback from [[LOCATION:Denver]] "
  "was positive overall?", tricky=True)
F("en-US", "chat", "I need to ask [[PERSON:Sunny Patel]] if it's sunny in [[LOCATION:Phoenix]] "
  "before I book.", tricky=True)
F("en-US", "note", "Patient: [[PERSON:Rosa Parks-Hernández]]\nDOB: 04/22/1961\nMRN: 00871234\n"
  "Room 3B, Mercy General", tricky=True)
F("en-IN", "chat", "[[PERSON:Lakshmi]] aunty is coming from [[LOCATION:Chennai]] on the Shatabdi, "
  "coach C4 seat 52, arriving 11:20. PNR 4521879360.", tricky=True)
F("en-US", "chat", "Does the Geneva Convention apply here, or is that only for [[LOCATION:Geneva]]-"
  "based organisations?", tricky=True)
F("en-GB", "email", "Thanks, [[PERSON:Ciarán]]. I've forwarded your note to [[PERSON:Niamh "
  "O'Sullivan]] in [[LOCATION:Cork]].")
F("en-US", "answer", "The [[LOCATION:Golden Gate Bridge]] connects [[LOCATION:San Francisco]] to "
  "[[LOCATION:Marin County]]; it opened in 1937 and its main span is 1,280 m.")
F("en-US", "chat", "Who is [[PERSON:Victoria]]? She signed the card 'V.' and mentioned Victoria's "
  "Secret, so I'm confused.", tricky=True)
F("fr-FR", "chat", "[[PERSON:Pascal]], tu peux relire le code Pascal de la migration ? Et la "
  "pression est en pascals, pas en bars.", tricky=True)
F("de-DE", "chat", "[[PERSON:Frank]] sagt, die Sendung ist frank und frei angekommen. Der Zoll in "
  "[[LOCATION:Frankfurt]] war schnell.", tricky=True)
F("es-ES", "chat", "[[PERSON:Rocío]], ¿has visto el rocío esta mañana en [[LOCATION:Asturias]]? "
  "Parece nieve.", tricky=True)
F("fr-FR", "email", "Bonjour [[PERSON:Rose]], les roses sont livrées au [[LOCATION:5 place "
  "Bellecour, 69002 Lyon]] demain matin.", tricky=True)
F("en-US", "chat", "Is Bank of America or Chase better for a student account? I'm moving to "
  "[[LOCATION:Charlotte]] in August and [[PERSON:Charlotte]] from my class says BofA.", tricky=True)
F("en-US", "note", "The New York Times and the Wall Street Journal both covered the Paris Saint-Germain "
  "transfer; the Boston Celtics story ran on page 3.", tricky=True)
F("en-US", "chat", "Ordered Dr. Martens boots, a Hugo Boss jacket and a bottle of Jack Daniel's for my "
  "dad - total $412.80. Will that ship by Friday?", tricky=True)
F("de-DE", "chat", "Die Deutsche Bahn hat meinen ICE nach [[LOCATION:Köln]] gestrichen. Bekomme ich "
  "die 89,90 € zurück oder nur einen Gutschein?", tricky=True)
F("es-ES", "chat", "El Banco Santander me ha cobrado una comisión de 12 € por una transferencia a "
  "[[LOCATION:Portugal]]. ¿Es normal?", tricky=True)
F("fr-FR", "note", "Fiche technique : Renault Clio, moteur 1.0 TCe 90 ch, consommation 5,3 l/100 km, "
  "garantie jusqu'au 31/12/2026.", tricky=True)
F("en-GB", "chat", "If it's an emergency call 999, or 112 anywhere in [[LOCATION:Europe]] - don't "
  "message the bot!", tricky=True)
F("en-US", "answer", "Dr. [[PERSON:Chidi Okafor]] and Prof. [[PERSON:Haruka Watanabe]] co-authored the "
  "study; it was run at two sites, [[LOCATION:Lagos]] and [[LOCATION:Kyoto]], between 2019 and 2022.")
F("en-IN", "chat", "[[PERSON:Anand]] uncle said the Tata Nexon and the Mahindra XUV700 are both good, but "
  "the service centre in [[LOCATION:Indore]] is better for Tata.", tricky=True)
F("en-US", "code", "# Ben & Jerry's flavour ranking script\nFLAVOURS = [\"Phish Food\", \"Half Baked\", "
  "\"Cherry Garcia\"]\nprint(sorted(FLAVOURS))", tricky=True)


# ---- no-PII texts (hard negatives) --------------------------------------------------------------

T(EN, "chat", "My order {{!order}} hasn't shipped yet. It's been 9 days and the page still says "
  "'processing'. Total was {{!price}}.")
T(EN, "chat", "What's the difference between version {{!ver}} and {{!ver}}? The changelog "
  "mentions a breaking change in the config loader.")
T(EN, "chat", "Why does my request return {{!status}} when the docs say {{!status}}? I'm calling "
  "the /v2/orders endpoint on port {{!port}}.")
T(EN, "chat", "Is {{!badcard}} a valid card number? My test suite says it fails the Luhn check "
  "but the QA sheet lists it as valid.")
T(EN, "chat", "Convert {{!price}} to euros and tell me if that's more or less than the "
  "{{!price}} quote from last month.")
T(EN, "chat", "I found this in a spreadsheet: {{!num:16}}. Is it a card number, a tracking number "
  "or something else? It has no label.")
T(EN, "chat", "Explain what a UUID like {{!uuid}} is made of, and whether v7 is better than v4 "
  "for database keys.")
T(EN, "chat", "ISBN {{!isbn}} - can you tell me what edition this is and if there's a newer one?")
T(EN, "chat", "The build {{!hash:7}} broke the tests on {{!date}}. Can you write a git bisect "
  "command to find the culprit between {{!hash:7}} and HEAD?")
T(EN, "chat", "write a regex that matches SKUs like {{!sku}} and {{!sku}} but not ticket ids "
  "like {{!ticket}}")
T(EN, "chat", "Is the IBAN {{!badiban}} valid? The bank app refuses it with 'invalid check "
  "digits'.")
T("en-US", "chat", "Why would a form reject {{!badssn}} as an SSN? It has nine digits.")
T(EN, "chat", "How long does a parcel with tracking {{!track}} usually take from the hub? It says "
  "'in transit' since {{!date}}.")
T(EN, "chat", "Give me a cron expression for every weekday at {{!time}} and explain each field.")
T(EN, "chat", "Our API returned {{!status}} for request {{!uuid}} at {{!time}}. What does that "
  "usually mean?")
T(EN, "ticket", "{{!ticket}}: checkout button unresponsive on Safari {{!ver:plain}}. Repro rate 3/5. "
  "Related: {{!ticket}}, {{!ticket}}.")
T(EN, "ticket", "Refund for {{!order}} ({{!price}}) approved. Restocking fee waived per policy "
  "4.2. Close after {{!date}}.")
T(EN, "ticket", "Duplicate of {{!ticket}}. Root cause: cache key collision in build {{!hash:12}}. "
  "Fix shipped in {{!ver}}.")
T(EN, "ticket", "Warehouse reports SKU {{!sku}} out of stock; backorder ETA {{!date}}. Invoice "
  "{{!invoice}} on hold.")
T(EN, "log", "{{!date:iso}}T{{!time:hms}}Z INFO scheduler: job nightly-backup finished in {{!num:3}}s "
  "(exit 0), snapshot {{!uuid}}", n=3)
T(EN, "log", "{{!date:iso}} {{!time:hms}} ERROR http: GET /api/v1/orders/{{!num:8}} -> {{!status}} "
  "({{!num:3}} ms) trace_id={{!hash:32}}", n=3)
T(EN, "log", "{{!date:iso}} {{!time:hms}} WARN billing: invoice {{!invoice}} total {{!price}} does not "
  "match line items (diff 0.01)", n=2)
T(EN, "log", "{{!date:iso}} {{!time:hms}} INFO deploy: rolled out {{!ver}} to 12/12 pods in eu-west-1 "
  "(image sha256:{{!hash:64}})", n=2)
T(EN, "log", "{{!date:iso}} {{!time:hms}} DEBUG validator: rejected card {{!badcard}} (luhn), iban "
  "{{!badiban}} (mod97), ssn {{!badssn}} (ssa area)", n=3)
T(EN, "log", "listening on 0.0.0.0:{{!port}} (pid {{!num:5}}), metrics on 127.0.0.1:9100, "
  "version {{!ver}}", n=2)
T(EN, "csv", "order_id,date,sku,qty,total\n{{!order}},{{!date}},{{!sku}},2,{{!price}}\n{{!order}},"
  "{{!date}},{{!sku}},1,{{!price}}\n{{!order}},{{!date}},{{!sku}},5,{{!price}}", n=2)
T(EN, "csv", "build,commit,status,duration_s\n{{!ver}},{{!hash:7}},passed,{{!num:3}}\n{{!ver}},"
  "{{!hash:7}},failed,{{!num:3}}\n{{!ver}},{{!hash:7}},passed,{{!num:3}}", n=2)
T(EN, "csv", "shipment,carrier,tracking,weight_kg\nS{{!num:6}},UPS,{{!track:ups}},2.4\n"
  "S{{!num:6}},USPS,{{!track:usps}},0.8\nS{{!num:6}},FedEx,{{!track:fedex}},11.0", n=2)
T(EN, "json", '{"id": "{{!uuid}}", "status": {{!status}}, "version": "{{!ver}}", "elapsed_ms": '
  '{{!num:3}}, "retry": false}', n=2)
T(EN, "json", '{"order": "{{!order}}", "items": [{"sku": "{{!sku}}", "qty": 1}, {"sku": '
  '"{{!sku}}", "qty": 3}], "total": "{{!price}}", "placed": "{{!date}}"}', n=2)
T(EN, "json", '{"test_cards": {"bad_luhn": "{{!badcard}}", "masked": "**** **** **** '
  '{{!num:4}}"}, "test_ssn": "{{!badssn}}", "test_iban": "{{!badiban}}"}', n=2)
T(EN, "code", "def parse_order_id(s: str) -> int:\n    # e.g. '{{!order}}'\n    return int(s."
  "split('-')[-1])\n\nassert parse_order_id('ORD-2024-118833') == 118833\n", n=2)
T(EN, "code", "SELECT order_id, total FROM orders WHERE created_at > '{{!date}}' AND status = "
  "{{!status}} LIMIT 100;", n=2)
T(EN, "answer", "A {{!status}} status means the request was understood but something went wrong. "
  "Check the logs around {{!time}} for request {{!uuid}}, and confirm you're on {{!ver}} or later.",
  n=2)
T(EN, "answer", "The number {{!badcard}} is not a valid card number: it fails the Luhn checksum. "
  "It may be a typo or a reference number.", n=2)
T(EN, "answer", "That looks like a tracking number ({{!track}}), not a phone or card number. You "
  "can paste it into the carrier's site.", n=2)
T(EN, "answer", "Semantic versioning uses MAJOR.MINOR.PATCH, so {{!ver}} -> {{!ver}} is an "
  "upgrade you should read the changelog for.", n=2)
T(EN, "email", "Your subscription renews on {{!date}} for {{!price}}. Invoice {{!invoice}} is "
  "available in your dashboard. No action is needed.", n=2)
T(EN, "email", "Release notes {{!ver}}: fixed a crash when importing CSV files over 2 GB; "
  "improved startup time by 18%; ticket {{!ticket}} closed.", n=2)
T(DE, "chat", "Meine Bestellung {{!order}} vom {{!date}} ist immer noch nicht da. Der Betrag von "
  "{{!price}} wurde schon abgebucht.", n=2)
T(DE, "log", "{{!date:iso}} {{!time:hms}} INFO Sicherung abgeschlossen, Dauer {{!num:3}} s, Version "
  "{{!ver}}", n=2)
T(FR, "chat", "Ma commande {{!order}} du {{!date}} n'est toujours pas arrivée alors que les "
  "{{!price}} ont été débités.", n=2)
T(FR, "email", "Votre facture {{!invoice}} d'un montant de {{!price}} est disponible. Échéance "
  ": {{!date}}.", n=2)
T(ES, "chat", "Mi pedido {{!order}} del {{!date}} sigue sin llegar y ya me han cobrado "
  "{{!price}}.", n=2)
T(ES, "email", "Su factura {{!invoice}} por {{!price}} ya está disponible. Vencimiento: "
  "{{!date}}.", n=2)
T("en-IN", "chat", "My PNR {{!num:10}} shows RAC 12. Will it get confirmed before {{!date}}? "
  "Fare was {{!price}}.", n=2)
T("en-GB", "chat", "Why was I charged {{!price}} twice for order {{!order}}? The bank says it's a "
  "pending authorisation.", n=2)


# ---- more payment cards ---------------------------------------------------------------------------

T(EN, "chat", "I think my card was skimmed at a petrol station in {{city}}. The number is {{card}}. "
  "What should I do first, freeze it or call the bank?", n=3)
T(EN, "chat", "which card networks are these? {{card:amex}} and {{card:jcb}} - a customer pasted "
  "both into the chat", n=2)
T(EN, "email", "Dear valued customer,\n\nWe could not verify your payment. Reply with your card "
  "number ({{card}}) and CVV to avoid suspension.\n\nSecurity Team", n=2)
T(EN, "ticket", "Chargeback on {{card:dashed}} for {{!price}} at merchant 'BLUE DOOR CAFE "
  "{{city}}'. Cardholder {{name}} says they never visited. Case {{!ticket}}.", n=3)
T(EN, "log", "{{!date:iso}} {{!time:hms}} INFO payment-gw: tokenised pan={{card:compact}} -> "
  "tok_{{!hash:24}} customer={{email}}", n=3)
T(EN, "log", "{{!date:iso}} {{!time:hms}} WARN pii-guard: card-like number in prompt, card={{card:spaced}} "
  "(luhn ok) and ref={{!badcard}} (luhn fail); redacted 1 of 2", n=3)
T(EN, "csv", "cardholder,card_number,brand,exp\n{{name}},{{card:visa}},Visa,08/27\n{{name}},"
  "{{card:mastercard}},Mastercard,11/26\n{{name}},{{card:amex}},Amex,02/28", n=3)
T(EN, "json", '{"payment_method": {"type": "card", "brand": "visa", "number": '
  '"{{card:visa,compact}}", "exp_month": 4, "exp_year": 2028}, "billing": {"name": "{{name}}", '
  '"city": "{{city}}"}}', n=3)
T(EN, "code", "PAYMENT_FIXTURES = {\n    \"ok_visa\": \"{{card:visa}}\",\n    \"ok_diners\": "
  "\"{{card:diners}}\",\n    \"bad_luhn\": \"{{!badcard}}\",\n}\n", n=2)
T(EN, "answer", "Here's what I extracted from the receipt image:\n- Name on card: {{name}}\n- Card "
  "number: {{card}}\n- Merchant: Corner Bistro, {{city}}\n- Total: {{!price}}", n=2)
T(EN, "chat", "my kid typed my whole card number {{card}} into a game chat 😩 how do I get a new "
  "one fast?", n=2)
T("en-IN", "chat", "Paid with my card {{card:visa}} for the order {{!order}} but the app shows "
  "payment failed and the amount {{!price}} is debited.", n=2)
T("en-GB", "chat", "My card {{card:mastercard}} was frozen after I used it in {{city:world}}. "
  "The app won't let me unfreeze it.", n=2)
T(EN, "form", "Payment details\nCard type: Maestro\nCard number: {{card:maestro}}\nName on card: "
  "{{name}}\nBilling country: {{country}}", n=2)
T(EN, "chat", "Can you check if these are valid? {{card:unionpay}}, {{!badcard}}, {{card:discover}}. "
  "Only need yes/no for each.", n=2)

# ---- more US Social Security numbers ----------------------------------------------------------------

US = "en-US"
T(US, "chat", "I think someone stole my identity - a credit card was opened with my SSN {{ssn}}. "
  "I live in {{city}}. Who do I call first?", n=3)
T(US, "email", "Hi {{first@a}},\n\nFor the direct deposit form, my SSN is {{ssn}} and my "
  "address is {{addr:US}}. Let me know if you need anything else.\n\nThanks,\n{{name@b}}", n=3)
T(US, "ticket", "Agent note: customer {{name}} read out their SSN ({{ssn}}) on the call and it "
  "was typed into the free-text notes. Please purge per policy.", n=3)
T(US, "log", "{{!date:iso}} {{!time:hms}} ERROR tax-export: row {{!num:4}} ssn={{ssn:compact}} "
  "employer_ein=12-{{!num:7}} state=XX invalid", n=3)
T(US, "csv", "dependent,relationship,ssn,dob\n{{name}},child,{{ssn}},{{!date}}\n{{name}},child,"
  "{{ssn}},{{!date}}\n{{name}},spouse,{{ssn}},{{!date}}", n=2)
T(US, "json", '{"taxpayer": {"name": "{{name@a}}", "ssn": "{{ssn}}"}, "spouse": {"name": '
  '"{{name@b}}", "ssn": "{{ssn}}"}, "filing_status": "MFJ", "year": 2023}', n=3)
T(US, "form", "Employee name: {{name}}\nSocial Security Number: {{ssn:space}}\nHome address: "
  "{{addr:US}}\nFiling status: Single", n=2)
T(US, "answer", "Please don't share your SSN ({{ssn}}) in chat - I've noted it but you should "
  "treat this conversation as sensitive. For the tax question: yes, you can file from {{region}}.",
  n=2)
T(US, "chat", "I typed {{!badssn:000}} by mistake on the application instead of my real SSN "
  "{{ssn}}. Can I fix it online or do I have to call?", n=2)
T(US, "note", "Intake: patient {{name}}, SSN {{ssn}}, insurance member ID {{!sku}}, referred by "
  "Dr. {{name}}. Copay {{!price}}.", n=3)
T(US, "email", "Rental application\nApplicant: {{name}}\nSSN: {{ssn}}\nCurrent address: "
  "{{addr:US}}\nEmployer: Northwind Traders\nMonthly income: {{!price:big}}", n=2)
T(US, "chat", "My W-2 shows {{ssn}} but the employer's portal has {{!badssn:g00}}, which can't be "
  "right. Which one goes on the 1040?", n=2)

# ---- more IBANs -----------------------------------------------------------------------------------------

T("en-GB", "email", "Hi {{first@a}},\n\nYour share of the holiday cottage is {{!price:big}}. Please "
  "send it to {{iban:GB}} (that's my Monzo) by the 20th.\n\n{{first@b}}", n=2)
T(EN, "ticket", "Supplier {{name}} changed bank details by email: new IBAN {{iban}}, previous "
  "{{iban}}. Verify by phone before paying {{!invoice}} - possible BEC fraud.", n=3)
T(EN, "chat", "which bank is {{iban:NL,c}}? and is {{iban:IT}} Italian? Need to know for the "
  "transfer fees", n=2)
T(EN, "json", '{"payout": {"beneficiary": "{{name}}", "iban": "{{iban:CH}}", "currency": "CHF", '
  '"amount": {{!amount}}}, "status": "pending"}', n=2)


# ---- more English variety: SMS, notes, config, prompts -----------------------------------------

T(EN, "sms", "{{first}}: running 10 min late, parked outside {{addr}}. Call {{phone}} if you "
  "can't see the car")
T(EN, "sms", "Hi {{first}}, it's {{first}} from the dental practice - your check-up is moved to "
  "Thursday {{!time}}. Reply STOP to opt out.", tricky=True)
T(EN, "chat", "Write a Python function that validates e-mail addresses. Test it with {{email}}, "
  "{{email:tag}} and 'not-an-email@' (should fail).")
T(EN, "chat", "Extract all the names from this: At the {{city}} meetup, {{name}} talked about "
  "async Rust, {{name}} demoed a WASM plugin and {{name}} ran the Q&A.")
T(EN, "note", "Call notes {{!date}}: spoke with {{name@a}} about the renewal. {{first@a}} wants "
  "15% off and a decision by Friday. Follow up at {{email@a}}.")
T("en-GB", "email", "Hi {{first}}, the keys are with the concierge at {{addr:GB}}. The key safe code "
  "is 4417 if nobody's at the desk. Enjoy the flat!", tricky=True)
T(EN, "ticket", "Possible account takeover: password reset requested from {{ip4:public}} "
  "({{country}}) while the account owner, {{name}}, is based in {{city}}.")
T(EN, "log", "{{!date:iso}}T{{!time:hms}}Z WARN geoip: {{ip4:public}} resolved to {{city:world}} "
  "(confidence 0.71, asn AS{{!num:5}})")
T(EN, "json", '{"contact": {"given_name": "{{first@a}}", "family_name": "{{last@a}}", "emails": '
  '["{{email@a}}", "{{email}}"], "mobile": "{{phone}}"}, "source": "import-{{!date:iso}}"}')
T(EN, "code", "const admin = {\n  name: \"{{name@a}}\",\n  email: \"{{email@a}}\",\n  role: "
  "\"owner\",\n};\nmodule.exports = { admin, version: \"{{!ver}}\" };")
T(EN, "config", "alerts:\n  email: {{email}}\n  sms: \"{{phone}}\"\nupstream: {{ip4:private}}:"
  "{{!port}}\nversion: {{!ver}}\nretries: 3")
T(EN, "chat", "Can you find somewhere near {{addr}} that's still open after 10pm? Nothing too "
  "fancy.")
T(EN, "chat", "Plan a 3-day road trip starting in {{city}} and going through {{region}}. We like "
  "small towns and short hikes.")
T(EN, "ticket", "Driver {{name}} says the delivery address {{addr}} doesn't show on the map, and "
  "the customer's phone {{phone}} goes straight to voicemail.")
T(EN, "email", "Welcome aboard, {{first@a}}!\n\nYour manager {{name@b}} will meet you at "
  "reception in our {{city}} office on Monday at 9:00. Your laptop is already set up.\n\nPeople "
  "Team", tricky=True)
T(EN, "chat", "Anonymise this before I paste it in the report: '{{name@a}} ({{email@a}}, {{phone}}) "
  "complained that the engineer left the door open.'")
T(EN, "note", "Vet appointment for Biscuit (cat, 4 yrs) - owner {{name}}, {{phone}}. Microchip "
  "{{!num:15}}. Bill {{!price}}.", tricky=True)
T("en-IN", "sms", "Dear {{name}}, 482913 is your OTP for login. Do not share it with anyone. Valid "
  "for 10 minutes.", tricky=True)
T("en-IN", "chat", "Please book a cab from {{addr:IN}} to the airport for 5 am tomorrow, and "
  "send the driver's details to {{phone:in}}.")
T(EN, "chat", "What time zone is {{city:world}} in? I have a call with {{name}} there at 9am my "
  "time, and I'm in {{city}}.")
T(EN, "ticket", "Misdirected email: message meant for {{email}} went to {{email}}. It contained "
  "order {{!order}} and the customer's address ({{addr}}). DPO informed.")
T("en-IN", "csv", "roll_no,student_name,parent_mobile,city\n{{!num:4}},{{name}},{{phone:in}},"
  "{{city}}\n{{!num:4}},{{name}},{{phone:in}},{{city}}\n{{!num:4}},{{name}},{{phone:in}},{{city}}")
T(EN, "log", "{{!date:iso}} {{!time:hms}} INFO sms-gateway: OTP delivered to {{phone:intl}} "
  "msg_id={{!hash:12}} cost=0.0042")
T(EN, "chat", "whatismyip says {{ip6}} - is that IPv6? why is it so long compared to my old "
  "{{ip4:public}}")
T(EN, "chat", "Is {{ip4:doc}} inside 203.0.113.0/24, and what about {{ip4:doc}}? I always mix up "
  "the documentation ranges.", tricky=True)
T("en-GB", "form", "Your name: {{name@a}}\nYour email: {{email@a}}\nYour message: Hi, I'm interested "
  "in the flat at {{addr:GB}}. Is it still available? I can view on Saturday.")
T(EN, "answer", "Here's a seating plan that keeps the teams mixed:\n\nTable 1: {{name}}, "
  "{{name}}, {{name}}\nTable 2: {{name}}, {{name}}, {{name}}")
T(EN, "answer", "Your message mentions {{name}} and an address in {{city}}. Before I draft the "
  "complaint, do you want me to leave out the phone number {{phone}}?")


# ---------------------------------------------------------------------------
# build, check, stats
# ---------------------------------------------------------------------------


def build():
    rng = random.Random(SEED)
    rows, seen = [], set()
    for ti, t in enumerate(TEMPLATES):
        made = 0
        attempts = 0
        while made < t["n"]:
            attempts += 1
            assert attempts < 50, t["text"][:60]
            loc = t["loc"]
            if loc == EN:
                loc = Gen(rng, "en-US").weighted(EN_MIX)
            text, ents = render(t["text"], loc, rng, t["fmt"])
            if text in seen:
                continue
            seen.add(text)
            rows.append({"locale": loc, "format": t["fmt"], "text": text, "entities": ents,
                         "_tricky": t["tricky"], "_template": ti})
            made += 1
    rng.shuffle(rows)
    for i, r in enumerate(rows, 1):
        r["id"] = "pii-%04d" % i
    return rows


def public(r):
    return {"id": r["id"], "locale": r["locale"], "format": r["format"], "text": r["text"],
            "entities": r["entities"]}


def check(rows):
    """Validate rows (public form). Returns a list of error strings."""
    errs = []
    ids = set()
    for r in rows:
        rid = r.get("id")
        if set(r) != {"id", "locale", "format", "text", "entities"}:
            errs.append("%s: bad keys %s" % (rid, sorted(r)))
        if rid in ids:
            errs.append("%s: duplicate id" % rid)
        ids.add(rid)
        text = r["text"]
        spans = sorted((e["start"], e["end"]) for e in r["entities"])
        for a, b in zip(spans, spans[1:]):
            if b[0] < a[1]:
                errs.append("%s: overlapping spans %s %s" % (rid, a, b))
        for e in r["entities"]:
            if e["entity"] not in ENTITIES:
                errs.append("%s: unknown entity %s" % (rid, e["entity"]))
            if not (0 <= e["start"] < e["end"] <= len(text)):
                errs.append("%s: bad offsets %s" % (rid, e))
            if text[e["start"]:e["end"]] != e["value"]:
                errs.append("%s: value mismatch %r vs %r" % (rid, text[e["start"]:e["end"]],
                                                              e["value"]))
            if e["value"] != e["value"].strip():
                errs.append("%s: span has outer whitespace %r" % (rid, e["value"]))
            v = e["value"]
            if e["entity"] == "CREDIT_CARD" and not luhn_ok(v):
                errs.append("%s: card fails Luhn %s" % (rid, v))
            if e["entity"] == "IBAN_CODE" and not iban_ok(v):
                errs.append("%s: IBAN fails mod-97 %s" % (rid, v))
            if e["entity"] == "US_SSN" and not ssn_ok(v):
                errs.append("%s: SSN breaks SSA rules %s" % (rid, v))
            if e["entity"] == "IP_ADDRESS":
                try:
                    ipaddress.ip_address(v)
                except ValueError:
                    errs.append("%s: bad IP %s" % (rid, v))
            if e["entity"] == "EMAIL_ADDRESS" and not re.fullmatch(
                    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+", v):
                errs.append("%s: bad e-mail %s" % (rid, v))
    return errs


def stats(rows, tricky_ids=None):
    ent = Counter(e["entity"] for r in rows for e in r["entities"])
    loc = Counter(r["locale"] for r in rows)
    fmt = Counter(r["format"] for r in rows)
    empty = sum(1 for r in rows if not r["entities"])
    out = {"rows": len(rows), "entities": dict(ent.most_common()), "locales": dict(loc.most_common()),
           "formats": dict(fmt.most_common()), "rows_without_entities": empty}
    if tricky_ids is not None:
        out["rows_with_lookalikes_and_pii"] = sum(
            1 for r in rows if r["entities"] and r["id"] in tricky_ids)
        out["rows_without_entities_or_with_lookalikes"] = sum(
            1 for r in rows if not r["entities"] or r["id"] in tricky_ids)
    return out


def main(argv):
    if "--check" in argv:
        with open(OUT, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        errs = check(rows)
        for e in errs:
            print(e)
        print("%d rows, %d errors" % (len(rows), len(errs)))
        return 1 if errs else 0
    rows = build()
    pub = [public(r) for r in rows]
    errs = check(pub)
    if errs:
        for e in errs:
            print(e)
        return 1
    if "--stats" in argv:
        tricky = {r["id"] for r in rows if r["_tricky"]}
        print(json.dumps(stats(pub, tricky), indent=2, ensure_ascii=False))
        print("templates:", len(TEMPLATES), "with instances:",
              len({r["_template"] for r in rows}))
        return 0
    with open(OUT, "w", encoding="utf-8") as f:
        for r in pub:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print("wrote %d rows to %s" % (len(pub), OUT))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
