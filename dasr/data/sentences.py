"""Sentences of a smart-assistant domain (alarms, calendar, travel, weather, home, media,
shopping, messages, units, facts, food, navigation, fitness, money) for the demo corpus.

A small context-free grammar: every rule is a list of alternatives, an alternative is text
with ``{rule}`` references, and expansion picks alternatives uniformly with a
:class:`random.Random`. Numbers, times and dates are spelled out, so every sentence is
already in :func:`dasr.data.text.normalize` form.
"""

from __future__ import annotations

import random
import re

MIN_WORDS = 4
MAX_WORDS = 14

_REF = re.compile(r"\{(\w+)\}")

_ONES = "zero one two three four five six seven eight nine".split()
_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORDINAL_ONES = "first second third fourth fifth sixth seventh eighth ninth".split()
_ORDINAL_TEENS = (
    "tenth eleventh twelfth thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth"
).split()


def _alts(text: str) -> list[str]:
    """Alternatives separated by '|' (may span lines)."""
    return [" ".join(a.split()) for a in text.split("|") if a.strip()]


def _cardinal(n: int) -> str:
    """Spell 0 <= n < 10000 in words: 2024 -> 'two thousand twenty four'."""
    if n < 10:
        return _ONES[n]
    if n < 20:
        return _TEENS[n - 10]
    if n < 100:
        return _TENS[n // 10 - 2] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + _cardinal(rest))
    rest = n % 1000
    return _cardinal(n // 1000) + " thousand" + ("" if rest == 0 else " " + _cardinal(rest))


def _ordinal(n: int) -> str:
    """Spell 1 <= n < 40 as an ordinal: 23 -> 'twenty third'."""
    if n < 10:
        return _ORDINAL_ONES[n - 1]
    if n < 20:
        return _ORDINAL_TEENS[n - 10]
    if n % 10 == 0:
        return _TENS[n // 10 - 2][:-1] + "ieth"
    return _TENS[n // 10 - 2] + " " + _ORDINAL_ONES[n % 10 - 1]


_GRAMMAR: dict[str, list[str]] = {
    # ---- top level: a domain, optionally wrapped in politeness
    "sentence": _alts("""{request} | {request} | {request} | {polite} {request} | {request} {thanks} |
        {question} | {question} | {wake} {question}"""),
    "request": _alts("""{alarm} | {calendar} | {travel} | {home} | {media} | {shopping} | {message} |
        {navigation} | {fitness} | {money} | {food_request}"""),
    "question": _alts("""{weather} | {convert} | {fact} | {food_question} | {travel_question} |
        {calendar_question} | {money_question} | {home_question}"""),
    "polite": _alts("""please | could you | can you | would you please | i'd like you to |
        i need you to | go ahead and | quickly"""),
    "thanks": _alts("please | thanks | thank you | right now | if you can"),
    "wake": _alts("hey assistant | okay computer | excuse me | quick question | hello there"),
    # ---- alarms, timers, reminders
    "alarm": _alts("""set an alarm for {time} | set an alarm for {time} {day_ref} |
        wake me up at {time} {day_ref} | wake me up {minutes} minutes earlier tomorrow |
        set a timer for {duration} | set a {duration} timer for the {dish} |
        cancel my {time} alarm | snooze the alarm for {minutes} minutes |
        remind me to {task} {when} | remind me {when} to {task} |
        set a reminder to {task} at {time} | turn off all alarms for {day_ref} |
        how much time is left on the {dish} timer | delete the reminder about {task_noun}"""),
    "task": _alts("""call {person} | pick up {item} | water the plants | take out the trash |
        feed the {pet} | pay the {bill} bill | buy {item} | email {person} |
        book a table at {restaurant} | renew my passport | charge the car |
        send the report to {person} | pack for the trip to {city} | check the {device} |
        return the library books | walk the {pet} | take my {medicine} |
        water the garden | clean the {room} | print the tickets | call the {profession}"""),
    "task_noun": _alts("""the {bill} bill | the {event} | {person}'s birthday | the {pet} |
        the library books | my passport | the {dish} | the tickets"""),
    # ---- calendar
    "calendar": _alts("""schedule a {event} with {person} {when} |
        move my {event} to {when} | cancel the {event} on {date} |
        invite {name} and {name} to the {event} | add {name}'s birthday on {date} |
        block two hours for {activity} {when} | create an event called {event} {when} |
        add a {event} at {time} on {date} | share my calendar with {person} |
        push the {event} back by {minutes} minutes | set up a call with {person} and {person} |
        mark {date} as a holiday | put {activity} on my calendar {when}"""),
    "calendar_question": _alts("""what's on my calendar {day_ref} | when is my next {event} |
        do i have anything {when} | am i free {when} | what time is the {event} with {person} |
        how many meetings do i have {day_ref} | when is {name}'s birthday |
        who is coming to the {event} {day_ref} | what day of the week is {date} |
        how many days until {holiday} | is {person} free for a {event} {when}"""),
    "event": _alts("""meeting | team meeting | dentist appointment | doctor's appointment |
        lunch | dinner | haircut | job interview | yoga class | piano lesson | conference call |
        review | workshop | parent teacher meeting | book club | date night | birthday party |
        board meeting | coffee break | training session | standup | presentation | wedding |
        football practice | swimming lesson | guitar lesson | checkup | game night |
        budget review | project kickoff | farewell party | barbecue | school play | concert"""),
    "activity": _alts("""running | reading | studying | gardening | cooking | shopping | cleaning |
        painting | swimming | hiking | writing | practicing piano | homework | meditation |
        laundry | grocery shopping | cycling | baking | fishing | sightseeing"""),
    "holiday": _alts("""christmas | new year's day | thanksgiving | halloween | easter |
        valentine's day | independence day | my birthday | the summer holidays | the long weekend |
        mother's day | father's day | the school holidays"""),
    # ---- travel
    "travel": _alts("""book a flight from {city} to {city} {when} |
        book a {seat} seat on the flight to {city} | find a hotel in {city} for {small} nights |
        rent a {vehicle} in {city} {when} | i need a taxi to the {place} |
        get me a ride to the {place} at {time} | check me in for my flight to {city} |
        buy two train tickets to {city} for {date} | find a cheap flight to {country} in {month} |
        cancel my hotel booking in {city} | add my {vehicle} rental to the trip |
        plan a {small} day trip to {country} | show me hotels near the {place} in {city}"""),
    "travel_question": _alts("""how long does it take to drive to {city} |
        what time does the train to {city} leave | is my flight to {city} on time |
        how far is the {place} from here | which gate does my flight leave from |
        when does the last bus to {city} leave | how much is a taxi to the {place} |
        do i need a visa for {country} | what's the time difference with {city} |
        what time is it in {city} right now | how long is the flight from {city} to {city} |
        what currency do they use in {country} | which terminal is {airline} in"""),
    "seat": _alts("window | aisle | middle | first class | business class | economy | exit row"),
    "vehicle": _alts("""car | van | small car | convertible | electric car | minivan | bike |
        scooter | pickup truck | camper van | motorcycle"""),
    "airline": _alts("""north star airways | blue sky airlines | coastal air | atlantic express |
        pacific wings | mountain air | sunrise airlines | polar jet"""),
    "place": _alts("""airport | train station | bus station | city center | museum | hospital |
        stadium | university | library | hotel | beach | harbor | zoo | post office |
        shopping mall | town hall | art gallery | concert hall | pharmacy | bakery | gym |
        supermarket | cinema | park | police station | swimming pool | market | cathedral"""),
    # ---- weather
    "weather": _alts("""what's the weather in {city} {day_ref} | what's the weather like {when} |
        will it {weather_verb} in {city} {day_ref} | is it going to {weather_verb} {day_ref} |
        is it going to be {weather_adj} {day_ref} | how {temp_adj} will it get in {city} {when} |
        what's the {weather_noun} forecast for {country} | do i need an umbrella {day_ref} |
        what's the temperature in {city} right now | will it be {weather_adj} in {city} on {weekday} |
        how strong is the wind in {city} | when will the {weather_noun} stop |
        what's the chance of {weather_noun} {day_ref} | should i wear a {clothing} {day_ref} |
        what time is sunrise in {city} {day_ref} | what time does the sun set {day_ref}"""),
    "weather_verb": _alts("rain | snow | hail | freeze | thunder | drizzle | clear up | warm up | cool down"),
    "weather_adj": _alts("""sunny | cloudy | windy | rainy | foggy | stormy | humid | cold | hot | warm |
        chilly | freezing | mild | dry | wet | icy | clear | overcast | breezy | snowy"""),
    "weather_noun": _alts("""rain | snow | storm | wind | fog | heat wave | thunderstorm | pollen | frost |
        hail | hurricane | tornado | air quality | humidity | ultraviolet"""),
    "temp_adj": _alts("hot | cold | warm | windy | humid"),
    "clothing": _alts("""coat | jacket | sweater | scarf | raincoat | hat | pair of gloves | pair of boots |
        pair of sunglasses | pair of shorts | hoodie"""),
    # ---- smart home
    "home": _alts("""turn {on_off} the {device} in the {room} | turn the {room} {device} {on_off} |
        set the {room} thermostat to {temperature} | dim the {room} lights to {percent} percent |
        lock the {door} | unlock the {door} for {name} | start the {appliance} at {time} |
        change the {room} lights to {color} | switch {on_off} the {appliance} |
        open the {room} curtains | close the blinds in the {room} | set the oven to {temperature} |
        turn the heating {up_down} by {small} degrees | vacuum the {room} {when} |
        run the {appliance} on the {mode} setting | make the {room} lights {brighter}"""),
    "home_question": _alts("""is the {door} locked | did i leave the {appliance} on |
        what's the temperature in the {room} | is anyone at the {door} |
        how long has the {appliance} been running | are the lights in the {room} still on |
        how much energy did the {appliance} use {period} | is the {appliance} finished yet"""),
    "on_off": _alts("on | off"),
    "up_down": _alts("up | down"),
    "brighter": _alts("brighter | darker | warmer | cooler | a little brighter | a bit darker"),
    "mode": _alts("eco | quick | quiet | heavy | delicate | night | turbo | normal"),
    "device": _alts("""lights | lamp | fan | heater | television | speaker | air conditioner |
        radio | ceiling fan | floor lamp | desk lamp | night light | humidifier | air purifier |
        projector | sound bar | space heater | reading light | fairy lights | security camera"""),
    "appliance": _alts("""dishwasher | washing machine | dryer | oven | coffee maker | kettle |
        robot vacuum | microwave | slow cooker | rice cooker | toaster | bread maker | sprinklers |
        water heater | pool pump"""),
    "room": _alts("""kitchen | living room | bedroom | bathroom | garage | office | hallway |
        dining room | basement | attic | nursery | guest room | patio | laundry room | kids room |
        study | porch | garden"""),
    "door": _alts("""front door | back door | garage door | side gate | patio door | basement door |
        garden gate | storage room"""),
    "color": _alts("""red | blue | green | yellow | orange | purple | pink | white | warm white |
        cool white | turquoise | violet | gold | amber | lavender | teal | crimson"""),
    # ---- media
    "media": _alts("""play some {genre} music in the {room} | play {genre} on the {room} speaker |
        play the latest album by {artist} | play songs by {artist} | turn the volume {up_down} |
        set the volume to {small} | skip this song | go back to the previous song |
        play the next episode of {show} | pause the {media_thing} | resume the {media_thing} |
        shuffle my {genre} playlist | add this song to my {genre} playlist |
        play the {station} radio station | read me the {news} news | watch {show} on the television |
        record {show} {when} | play the audiobook {book} | play some {ambient} sounds"""),
    "media_thing": _alts("music | podcast | movie | audiobook | video | song | episode | show"),
    "genre": _alts("""jazz | rock | classical | blues | country | hip hop | folk | reggae | soul |
        pop | disco | metal | punk | funk | gospel | opera | electronic | ambient | bluegrass |
        salsa | latin | indie | swing | lullaby | piano"""),
    "artist": _alts("""the silver lanterns | maya brooks | the river kings | lucas grant |
        the paper moons | nina hartley | the velvet owls | oscar reyes | the midnight choir |
        clara west | the copper foxes | elena vance | the northern lights | sam porter"""),
    "show": _alts("""the morning show | kitchen heroes | the great outdoors | space detectives |
        the last lighthouse | city lights | ocean secrets | the quiet forest | garden rescue |
        mystery manor | the long road | planet kitchen | animal rescue | the evening news"""),
    "station": _alts("news | sports | classic rock | jazz | country | talk | public | local | oldies"),
    "news": _alts("""latest | sports | business | science | technology | local | world | political |
        health | entertainment | travel | weather"""),
    "ambient": _alts("rain | ocean | forest | thunderstorm | fireplace | river | bird | wind | white noise"),
    "book": _alts("""the silent harbor | a winter journey | the glass garden | river of stars |
        the old clockmaker | the hidden valley | the paper boat | letters from home |
        the last summer | the blue notebook | a map of the sky | the secret orchard"""),
    # ---- shopping
    "shopping": _alts("""add {item} to my shopping list | add {quantity} {item} to my shopping list |
        order {small} {container} of {item} | remove {item} from the list |
        put {item} and {item} on the grocery list | reorder the {item} i bought last week |
        buy a new {product} | track my order of {item} | cancel the order for the {product} |
        read me my shopping list | clear the shopping list | add {item} to the {store} order |
        return the {product} i bought {period}"""),
    "quantity": _alts("""{small} | a dozen | half a dozen | a pound of | two pounds of | a kilo of |
        a bag of | a box of | a bottle of | a carton of | a can of | a jar of | a loaf of"""),
    "container": _alts("boxes | bags | bottles | cans | jars | packs | cartons | bunches | loaves | tins"),
    "item": _alts("""milk | eggs | bread | butter | cheese | apples | bananas | oranges | grapes |
        strawberries | blueberries | lemons | limes | tomatoes | potatoes | onions | garlic |
        carrots | broccoli | spinach | lettuce | cucumbers | peppers | mushrooms | rice | pasta |
        flour | sugar | salt | olive oil | coffee | tea | orange juice | yogurt | cereal | honey |
        peanut butter | jam | chicken | beef | salmon | tuna | beans | lentils | almonds |
        walnuts | chocolate | cookies | crackers | paper towels | toilet paper | dish soap |
        laundry detergent | toothpaste | shampoo | batteries | light bulbs | trash bags |
        dog food | cat food | diapers | sparkling water | avocados | pears | peaches | celery"""),
    "product": _alts("""phone charger | pair of headphones | laptop | keyboard | computer mouse |
        coffee mug | backpack | umbrella | water bottle | desk chair | monitor | printer |
        tablet | smart watch | camera | suitcase | blender | toaster | frying pan | pillow |
        blanket | towel set | lamp | wall clock | bookshelf | rug | vacuum cleaner"""),
    "store": _alts("grocery | pharmacy | hardware store | pet store | bakery | farmers market"),
    # ---- messages and calls
    "message": _alts("""call {person} | call {name} on speaker | call {person} on {phone} |
        send a message to {name} saying {note} | text {name} that {note} |
        tell {name} that {note} | read my new messages from {name} |
        read my latest email from {person} | reply to {name} with {note} |
        send an email to {person} about the {event} | video call {name} |
        redial the last number | block calls from {person} | forward the email to {name}"""),
    "phone": _alts("his mobile | her mobile | the home phone | the work phone | their cell phone"),
    "note": _alts("""i'm running late | i'll be there in {minutes} minutes | dinner is ready |
        the meeting is moved to {time} | see you at the {place} | i'm on my way |
        call me back | happy birthday | the keys are under the mat | don't forget the {item} |
        we're out of {item} | the train is delayed | i'll pick you up at {time} |
        thanks for the {gift} | let's meet at {time} | i can't make it {day_ref}"""),
    "gift": _alts("flowers | book | card | cake | present | help | ride | dinner | advice"),
    # ---- units, numbers and facts
    "convert": _alts("""how many {unit} are in {number} {unit} | convert {number} {unit} to {unit} |
        what is {number} {operation} {number} | what's {percent} percent of {number} |
        what is {number} {unit} in {unit} | what's the square root of {number} |
        how much is {amount} in {currency} | convert {amount} to {currency} |
        what's {number} divided by {small} | round {number} point {small} to the nearest whole number |
        convert {temperature} to {temp_scale}"""),
    "fact": _alts("""what's the capital of {country} | how tall is the {landmark} |
        how old is the {landmark} | what's the population of {city} |
        how do you spell {word} | define the word {word} | what does {word} mean |
        what's another word for {word} | who wrote {book} | how far is the moon from earth |
        how many people live in {country} | what language do they speak in {country} |
        what's the tallest mountain in {country} | how deep is the {sea} |
        what sound does a {animal} make | how fast can a {animal} run | how long does a {animal} live |
        what do {animal_plural} eat | where do {animal_plural} live | tell me a fact about {animal_plural} |
        what does a {profession} do | how much does a {profession} earn in {country} |
        when was the {landmark} built | what year did the {invention} come out |
        tell me a joke about {animal_plural} | what's the biggest city in {country}"""),
    "unit": _alts("""meters | kilometers | miles | feet | inches | yards | centimeters | millimeters |
        grams | kilograms | pounds | ounces | liters | milliliters | gallons | quarts | pints |
        cups | tablespoons | teaspoons | seconds | minutes | hours | days | weeks | acres |
        hectares | calories | kilojoules | bytes | megabytes | gigabytes"""),
    "operation": _alts("plus | minus | times | divided by | multiplied by | to the power of"),
    "currency": _alts("""dollars | euros | pounds | yen | pesos | rupees | francs | kronor | yuan |
        canadian dollars | australian dollars | swiss francs"""),
    "temp_scale": _alts("celsius | fahrenheit | kelvin"),
    "landmark": _alts("""eiffel tower | statue of liberty | great wall of china | leaning tower of pisa |
        empire state building | golden gate bridge | big ben | taj mahal | sydney opera house |
        colosseum | great pyramid | space needle | tower bridge | brandenburg gate | mount rushmore"""),
    "sea": _alts("""pacific ocean | atlantic ocean | indian ocean | arctic ocean | mediterranean sea |
        black sea | red sea | dead sea | north sea | baltic sea | caribbean sea | lake superior"""),
    "animal": _alts("""dog | cat | cow | horse | sheep | goat | pig | duck | chicken | owl | lion |
        tiger | elephant | giraffe | zebra | monkey | gorilla | kangaroo | koala | panda | bear |
        wolf | fox | rabbit | deer | camel | dolphin | whale | shark | penguin | eagle | parrot |
        frog | snake | turtle | cheetah | hippo | rhino | squirrel | bee"""),
    "animal_plural": _alts("""dogs | cats | cows | horses | sheep | goats | pigs | ducks | owls | lions |
        tigers | elephants | giraffes | zebras | monkeys | kangaroos | koalas | pandas | bears |
        wolves | foxes | rabbits | deer | camels | dolphins | whales | sharks | penguins | eagles |
        parrots | frogs | snakes | turtles | cheetahs | squirrels | bees | ants | butterflies"""),
    "pet": _alts("dog | cat | fish | hamster | rabbit | parrot | turtle | puppy | kitten | guinea pig"),
    "profession": _alts("""plumber | electrician | dentist | doctor | nurse | teacher | lawyer |
        architect | engineer | pilot | chef | mechanic | carpenter | pharmacist | accountant |
        firefighter | librarian | veterinarian | gardener | photographer | journalist | farmer |
        painter | baker | dietitian | surgeon | programmer | scientist | translator | optician"""),
    "invention": _alts("""telephone | television | radio | airplane | light bulb | computer |
        internet | bicycle | camera | printing press | steam engine | microwave | smartphone |
        refrigerator | typewriter | satellite"""),
    "word": _alts("""serendipity | ephemeral | ubiquitous | resilient | meticulous | ambiguous |
        benevolent | candid | diligent | eloquent | frugal | gregarious | humble | jovial |
        keen | lucid | mundane | nostalgia | obscure | pragmatic | quaint | robust | subtle |
        tenacious | vivid | whimsical | zealous | necessary | rhythm | conscience | definitely |
        separate | accommodate | occasion | restaurant | calendar | bicycle | wednesday |
        february | library | government | environment | knowledge | schedule"""),
    # ---- food
    "food_request": _alts("""find a {cuisine} restaurant near the {place} |
        reserve a table for {small} at {restaurant} {when} | order a {dish} from {restaurant} |
        show me a recipe for {dish} | find a {diet} recipe with {item} |
        book a table for {small} people at {time} | order {dish} for dinner |
        read me the next step of the {dish} recipe | add {item} to the {dish} recipe"""),
    "food_question": _alts("""how do i make {dish} | how many calories are in a {dish} |
        how long should i bake the {dish} | what can i cook with {item} and {item} |
        is {restaurant} open {when} | what time does {restaurant} close |
        how long do i boil {item} | what wine goes with {dish} | is there {item} in the {dish} |
        how much {item} do i need for the {dish} | which {cuisine} restaurants deliver to my address"""),
    "cuisine": _alts("""italian | chinese | japanese | mexican | indian | thai | french | greek |
        spanish | korean | vietnamese | turkish | lebanese | ethiopian | moroccan | brazilian |
        german | american | vegetarian | vegan | seafood | sushi | pizza | burger | steak"""),
    "diet": _alts("vegan | vegetarian | gluten free | low carb | dairy free | quick | healthy | cheap | spicy"),
    "dish": _alts("""lasagna | pancakes | omelette | pizza | risotto | curry | chili | soup |
        tomato soup | chicken soup | apple pie | banana bread | chocolate cake | cheesecake |
        roast chicken | beef stew | fried rice | pad thai | tacos | burritos | sushi | ramen |
        dumplings | spaghetti | meatballs | salad | caesar salad | sandwich | hamburger |
        muffins | brownies | cookies | waffles | guacamole | hummus | paella | falafel | quiche"""),
    "restaurant": _alts("""the golden spoon | blue harbor grill | mama rosa's | the green olive |
        luigi's pizzeria | the corner bistro | the rusty anchor | sakura house | taco fiesta |
        the little kitchen | spice garden | the oak tavern | noodle bar | the village bakery"""),
    # ---- navigation
    "navigation": _alts("""navigate to {address} | take me to {address} | directions to the {place} |
        avoid highways on the way to {city} | find the nearest {station_kind} |
        find parking near the {place} | how's the traffic on the way to {place_ref} |
        show me the route to {place_ref} by {transport} | share my location with {name} |
        add a stop at the {place} | find a {station_kind} on the way to {city}"""),
    "address": _alts("""{number} {street} {street_kind} | {small} {street} {street_kind} |
        the {place} on {street} {street_kind} | {person}'s house | my office | home | work"""),
    "place_ref": _alts("the {place} | work | home | {person}'s place | {city}"),
    "street": _alts("""main | oak | maple | pine | cedar | elm | park | lake | hill | river |
        church | market | station | spring | chestnut | willow | bridge | king | queen |
        victoria | lincoln | washington | jefferson | franklin | high | mill | meadow | sunset"""),
    "street_kind": _alts("street | avenue | road | lane | drive | boulevard | square | court"),
    "station_kind": _alts("""gas station | charging station | coffee shop | pharmacy | rest stop |
        hospital | car wash | bakery | grocery store | hardware store | bike shop"""),
    "transport": _alts("car | bus | train | bike | foot | subway | tram | ferry | taxi"),
    # ---- fitness and health
    "fitness": _alts("""log a {small} mile {exercise} | start a {duration} {workout} workout |
        log {number} {fitness_unit} of {exercise} | set my daily step goal to {thousands} steps |
        track my {exercise} {day_ref} | pause my workout | end the {workout} workout |
        log a glass of water | log {small} hours of sleep | remind me to stretch every hour |
        log {dish} for {meal} | set a goal to {exercise} {small} times a week"""),
    "exercise": _alts("run | walk | swim | bike ride | hike | jog | row | climb | dance"),
    "workout": _alts("""yoga | pilates | strength | cardio | stretching | cycling | rowing | boxing |
        interval | core | running | dance | leg | upper body"""),
    "fitness_unit": _alts("minutes | kilometers | miles | laps | steps | hours"),
    "meal": _alts("breakfast | lunch | dinner | a snack | dessert"),
    "medicine": _alts("""vitamins | medicine | pills | allergy tablets | painkillers | cough syrup |
        eye drops | iron supplement"""),
    # ---- money
    "money": _alts("""transfer {amount} to {name} | pay the {bill} bill {when} |
        send {amount} to {person} for the {gift} | set a budget of {amount} for {category} |
        split the {dish} bill with {name} and {name} | move {amount} to my savings account |
        pay {name} back {amount} | request {amount} from {name} for {category}"""),
    "money_question": _alts("""how much did i spend on {category} {period} |
        what's my account balance | when is the {bill} bill due | how much do i owe {name} |
        what's the exchange rate for {currency} | how much is left in my {category} budget |
        did {name} pay me back | what was my biggest purchase {period}"""),
    "amount": _alts("""{small} dollars | {number} dollars | {number} euros | {number} pounds |
        {number} dollars and {tens_word} cents | {small} hundred dollars | {thousands} dollars"""),
    "bill": _alts("""electricity | water | gas | phone | internet | credit card | rent | insurance |
        cable | heating | parking | tuition"""),
    "category": _alts("""groceries | restaurants | coffee | transport | clothes | books | gifts |
        travel | fuel | movies | games | rent | utilities | subscriptions | sports | toys | pets"""),
    "period": _alts("""this week | last week | this month | last month | this year | last year |
        yesterday | today | in {month} | since {weekday} | over the weekend"""),
    # ---- people
    "person": _alts("{name} | {name} {surname} | {relative} | my {relative} | {title} {surname} | the {profession}"),
    "relative": _alts("""mom | dad | grandma | grandpa | sister | brother | aunt | uncle | cousin |
        wife | husband | daughter | son | boss | neighbor | roommate | best friend | partner | coach"""),
    "title": _alts("doctor | mister | missus | miss | professor | captain | judge"),
    "name": _alts("""james | mary | john | patricia | robert | jennifer | michael | linda | william |
        elizabeth | david | barbara | richard | susan | joseph | jessica | thomas | sarah |
        charles | karen | daniel | nancy | matthew | lisa | anthony | betty | mark | sandra |
        paul | ashley | steven | emily | andrew | kimberly | joshua | donna | kevin | michelle |
        brian | carol | george | amanda | edward | melissa | ronald | deborah | timothy | laura |
        jason | rebecca | ryan | sharon | jacob | cynthia | gary | kathleen | nicholas | amy |
        eric | angela | jonathan | anna | stephen | ruth | larry | brenda | justin | pamela |
        scott | nicole | frank | katherine | benjamin | samantha | gregory | christine | samuel |
        emma | raymond | olivia | patrick | sophia | alexander | grace | jack | chloe | dennis |
        hannah | jerry | zoe | tyler | lucy | aaron | mia | henry | ella | peter | victoria |
        oliver | isabella | noah | ava | liam | charlotte | ethan | harper | lucas | amelia |
        mason | evelyn | logan | abigail | owen | lily | leo | nora | adam | ruby | oscar | ivy |
        hugo | alice | felix | clara | max | rosa | omar | fatima | raj | priya | wei | mei |
        hiroshi | yuki | carlos | sofia | diego | lucia | pierre | marie | hans | greta"""),
    "surname": _alts("""smith | johnson | williams | brown | jones | garcia | miller | davis |
        rodriguez | martinez | hernandez | lopez | gonzalez | wilson | anderson | taylor | moore |
        jackson | martin | lee | thompson | white | harris | clark | lewis | robinson | walker |
        young | allen | king | wright | scott | hill | green | adams | baker | nelson | carter |
        mitchell | roberts | turner | phillips | campbell | parker | evans | edwards | collins |
        stewart | morris | murphy | cook | rogers | morgan | peterson | cooper | reed | bailey |
        bell | kelly | howard | ward | cox | richardson | wood | watson | brooks | bennett |
        gray | james | hughes | price | sanders | myers | long | ross | foster | patel | nguyen |
        chen | wang | kim | singh | khan | silva | muller | rossi | dubois | tanaka | sato"""),
    # ---- places
    "city": _alts("""new york | los angeles | chicago | houston | phoenix | philadelphia |
        san antonio | san diego | dallas | austin | seattle | denver | boston | miami | atlanta |
        detroit | portland | las vegas | nashville | baltimore | san francisco | orlando |
        new orleans | minneapolis | cleveland | pittsburgh | salt lake city | kansas city |
        toronto | montreal | vancouver | ottawa | calgary | mexico city | havana | lima | bogota |
        santiago | buenos aires | rio de janeiro | sao paulo | london | paris | berlin | madrid |
        rome | lisbon | dublin | edinburgh | glasgow | manchester | liverpool | amsterdam |
        brussels | vienna | prague | warsaw | budapest | athens | istanbul | copenhagen |
        stockholm | oslo | helsinki | zurich | geneva | munich | hamburg | milan | venice |
        florence | naples | barcelona | seville | moscow | cairo | nairobi | cape town | lagos |
        casablanca | dubai | tel aviv | mumbai | delhi | bangalore | bangkok | singapore |
        hong kong | shanghai | beijing | tokyo | osaka | kyoto | seoul | manila | jakarta |
        sydney | melbourne | brisbane | perth | auckland | wellington | honolulu | anchorage"""),
    "country": _alts("""france | germany | italy | spain | portugal | ireland | scotland | england |
        wales | norway | sweden | finland | denmark | iceland | poland | austria | switzerland |
        belgium | the netherlands | greece | turkey | egypt | morocco | kenya | nigeria |
        south africa | india | china | japan | korea | thailand | vietnam | indonesia |
        the philippines | australia | new zealand | canada | mexico | brazil | argentina |
        chile | peru | colombia | cuba | jamaica | the united states | russia | ukraine |
        hungary | croatia | israel | jordan | nepal"""),
    # ---- time and numbers
    "when": _alts("""{day_ref} | at {time} | at {time} {day_ref} | on {date} | on {weekday} |
        {day_ref} at {time} | next {weekday} | next {weekday} at {time} | in {duration} |
        this weekend | next week | next month | in {month} | on {weekday} {part_of_day}"""),
    "day_ref": _alts("""today | tonight | tomorrow | tomorrow morning | tomorrow night |
        this morning | this afternoon | this evening | on {weekday} | next {weekday} |
        on {weekday} {part_of_day} | the day after tomorrow | on {date}"""),
    "part_of_day": _alts("morning | afternoon | evening | night"),
    "weekday": _alts("monday | tuesday | wednesday | thursday | friday | saturday | sunday"),
    "month": _alts("""january | february | march | april | may | june | july | august |
        september | october | november | december"""),
    "date": _alts("""{month} {ordinal} | the {ordinal} of {month} | the {ordinal} |
        {weekday} the {ordinal} | {month} {ordinal} {year}"""),
    "year": _alts("""twenty twenty five | twenty twenty six | twenty twenty seven |
        two thousand twenty eight | nineteen ninety nine"""),
    "ordinal": [_ordinal(n) for n in range(1, 32)],
    "time": _alts("""{hour} o'clock | {hour} {minute} | half past {hour} | a quarter past {hour} |
        a quarter to {hour} | {hour} {minute} in the {part_of_day} | noon | midnight | {hour} in the {part_of_day} | {minutes} past {hour}"""),
    "hour": [_cardinal(n) for n in range(1, 13)],
    "minute": ["oh " + _cardinal(n) for n in range(1, 10)] + [_cardinal(n) for n in range(10, 60)],
    "minutes": _alts("five | ten | fifteen | twenty | twenty five | thirty | forty five | ninety"),
    "duration": _alts("""{small} minutes | {minutes} minutes | {small} hours | an hour | half an hour |
        {small} seconds | one minute | a minute and a half | {small} hours and {minutes} minutes"""),
    "temperature": _alts(
        "{tens_word} degrees | {tens_word} {digit} degrees | {small} degrees | {small} hundred degrees"
    ),
    "percent": _alts("{tens_word} | {small} | fifty | a hundred | {tens_word} {digit}"),
    "small": [_cardinal(n) for n in range(2, 13)],
    "digit": _ONES[1:],
    "tens_word": _TENS,
    "number": [_cardinal(n) for n in range(2, 100)]
    + _alts("""
        a hundred | two hundred | three hundred | five hundred | a thousand | two thousand |
        ten thousand | a million | one point five | two point five | three point seven"""),
    "thousands": _alts("{small} thousand | {tens_word} thousand | {small} thousand five hundred"),
}


def _expand(rule: str, rng: random.Random) -> str:
    alternative = rng.choice(_GRAMMAR[rule])
    return _REF.sub(lambda m: _expand(m.group(1), rng), alternative)


def sentence(rng: random.Random) -> str:
    """One random sentence of MIN_WORDS to MAX_WORDS words."""
    while True:
        text = _expand("sentence", rng)
        if MIN_WORDS <= len(text.split()) <= MAX_WORDS:
            return text


def generate_sentences(n: int, seed: int) -> list[str]:
    """Return ``n`` distinct sentences, the same for the same ``seed``.

    Args:
        n: how many sentences.
        seed: seed of the :class:`random.Random` that drives the grammar.

    Returns:
        The sentences in generation order; each is already normalised
        (lower-case words, apostrophes, single spaces).

    Raises:
        ValueError: ``n`` is negative.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        text = sentence(rng)
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def _last_words(rule: str) -> set[str]:
    """The words a rule's expansion can end with."""
    words: set[str] = set()
    for alternative in _GRAMMAR[rule]:
        last = alternative.split()[-1]
        ref = _REF.fullmatch(last)
        words |= _last_words(ref.group(1)) if ref else {last}
    return words


def vocabulary() -> set[str]:
    """Every word the grammar can produce, possessives such as "james's" included."""
    words: set[str] = set()
    for alternatives in _GRAMMAR.values():
        for alternative in alternatives:
            for token in alternative.split():
                ref = _REF.match(token)
                if ref is None:
                    words.add(token)
                elif ref.end() < len(token):
                    suffix = token[ref.end() :]
                    words |= {word + suffix for word in _last_words(ref.group(1))}
    return words
